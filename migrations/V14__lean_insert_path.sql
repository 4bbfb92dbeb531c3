-- livesync: Xpert's appointment insert runs one SQL statement of livesync's, not five.
--
-- Why (BENCHMARKS.md, write-path cost): counted in instructions (callgrind, one backend),
-- a new appointment with three participants cost Xpert 585k instructions without livesync
-- and 876k with V13. What cost most was not the work but its form:
-- - the WHEN condition of the participant insert trigger (V12): PostgreSQL re-reads and
--   plans it from its stored text for every statement, 36k instructions per participant,
--   twice what a plpgsql trigger that returns at once costs;
-- - every statement a trigger runs through SPI (each ~40-55k): the check of the global
--   switch, the insert, the look at livesync.workers inside livesync.wake.
-- Now the appointment insert runs a single statement (the insert with the switch check in
-- it), and everything else is a simple expression, which plpgsql evaluates without SPI:
-- - the counter and the commit-watch lock as in V13, once per transaction (told by the
--   note for the participant trigger, which is unset at a transaction's first appointment);
-- - whether a worker sleeps is read from a sequence, livesync.wake_until, kept up to date
--   by a trigger on livesync.workers (below), instead of a query on that table;
-- - the participant insert trigger has no WHEN: it returns at its first line for a
--   participant of the appointment this transaction just logged.

-- Until when (seconds since the epoch) a worker sleeps and LISTENs while none is awake;
-- 0 or in the past: nobody to wake. A sequence because a trigger reads it with a function
-- call (pg_sequence_last_value), not a query; it is written only when livesync.workers
-- changes (a worker starting, sleeping, waking, its heartbeat every 5 s, stopping).
create sequence livesync.wake_until minvalue 0 start 0;

comment on sequence livesync.wake_until is
  'Seconds since the epoch until which a live worker sleeps and none is awake (the heartbeat '
  'of the sleeping workers + 30 s); maintained by the trigger on livesync.workers, read by '
  'livesync.wake and the appointment insert trigger to decide whether to NOTIFY.';

-- Recompute wake_until from livesync.workers. Serialised by an advisory lock (class
-- 27763, key -1: commit-watch keys are never negative), taken before the look at the
-- table, so that two workers changing state at once cannot leave a value computed from a
-- view that misses the other's change. With the owner's rights: a worker's role may read
-- the sequence, not set it. Every name is qualified.
create function livesync.after_workers_change() returns trigger
language plpgsql security definer as $$
declare
  v_until pg_catalog.int8;
begin
  perform pg_catalog.pg_advisory_xact_lock(27763, -1);
  select case
           when pg_catalog.bool_or(w.awake) then 0
           else coalesce(pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.max(w.heartbeat_at)))::pg_catalog.int8
                         operator(pg_catalog.+) 30, 0)
         end
    into v_until
    from livesync.workers w
   where w.heartbeat_at operator(pg_catalog.>)
         (pg_catalog.now() operator(pg_catalog.-) '30 seconds'::pg_catalog.interval);
  perform pg_catalog.setval('livesync.wake_until'::pg_catalog.regclass, coalesce(v_until, 0));
  return null;
end $$;

create trigger livesync_wake_until
  after insert or update or delete or truncate on livesync.workers
  for each statement execute function livesync.after_workers_change();

-- The state as the workers' table says now (workers of an earlier version may be running).
update livesync.workers set heartbeat_at = heartbeat_at;

-- The wake-up of V12, read from the sequence: NOTIFY only while a worker sleeps and none
-- is awake.
create or replace function livesync.wake(p_payload pg_catalog.text) returns void
language plpgsql as $$
begin
  if pg_catalog.pg_sequence_last_value('livesync.wake_until'::pg_catalog.regclass)
       operator(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) then
    perform pg_catalog.pg_notify('livesync_wake', p_payload);
  end if;
end $$;

-- A new appointment: one change-log row for all its participants (V12), in the one
-- statement of this trigger; counter, lock, wake-up and the note for the participant
-- trigger are simple expressions (the wake-up written out, not a call of livesync.wake:
-- a plpgsql call costs about as much as a trigger call, ~15k instructions). The counter
-- moves before wake_until is read: a worker going to sleep sets wake_until first and then
-- looks at the counter, so one of the two sees the other.
create or replace function livesync.on_appointment_insert() returns trigger
language plpgsql security definer as $$
begin
  insert into livesync.changes (appointment_id, user_id)
  select new.id, null
    from livesync.settings s
   where s.live_sync_enabled and s.cti_sync_licensed;
  if found then
    -- The transaction's first new appointment (the note below is unset, or empty after an
    -- earlier transaction of this session): one lock per transaction, however many
    -- appointments it inserts, so a large import cannot exhaust the lock table.
    if coalesce(pg_catalog.current_setting('livesync.new_appointment', true), '')
         operator(pg_catalog.=) '' then
      perform pg_catalog.pg_advisory_xact_lock(27763,
        (pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass)
           operator(pg_catalog.%) 2147483648)::pg_catalog.int4);
      if pg_catalog.pg_sequence_last_value('livesync.wake_until'::pg_catalog.regclass)
           operator(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) then
        perform pg_catalog.pg_notify('livesync_wake', pg_catalog.concat('appointment:', new.id));
      end if;
    end if;
    perform pg_catalog.set_config('livesync.new_appointment', new.id::pg_catalog.text, true);
  end if;
  return null;
end $$;

-- The participant trigger of V13, now also for inserts without WHEN: a participant of the
-- appointment this transaction logged returns at the first line.
create or replace function livesync.on_participant_change() returns trigger
language plpgsql security definer as $$
declare
  v_xid pg_catalog.text;
  v_state pg_catalog.text;
begin
  if tg_op operator(pg_catalog.=) 'INSERT'
     and pg_catalog.current_setting('livesync.new_appointment', true)
         operator(pg_catalog.=) new.appointment_id::pg_catalog.text then
    return null;
  end if;
  v_xid := pg_catalog.pg_current_xact_id()::pg_catalog.text;
  v_state := pg_catalog.current_setting('livesync.tx', true);
  -- (Not "is distinct from": it looks the = operator up by the caller's search_path.)
  if v_state is null or v_state operator(pg_catalog.<>) v_xid then
    if v_state operator(pg_catalog.=) pg_catalog.concat('off:', v_xid) then
      return null;
    end if;
    -- The first change of this transaction.
    if not exists (select from livesync.settings s
                   where s.live_sync_enabled and s.cti_sync_licensed) then
      perform pg_catalog.set_config('livesync.tx', pg_catalog.concat('off:', v_xid), true);
      return null;
    end if;
    perform pg_catalog.set_config('livesync.tx', v_xid, true);
    perform livesync.note_change(pg_catalog.concat(coalesce(new.user_id, old.user_id)));
  end if;
  if tg_op operator(pg_catalog.<>) 'INSERT' then
    insert into livesync.changes (appointment_id, user_id)
    values (old.appointment_id, old.user_id);
  end if;
  if tg_op operator(pg_catalog.<>) 'DELETE' then
    insert into livesync.changes (appointment_id, user_id)
    values (new.appointment_id, new.user_id);
  end if;
  return null;
end $$;

drop trigger livesync_queue_new_participants on xpert.appointment_participants;
drop trigger livesync_queue_participants on xpert.appointment_participants;

create trigger livesync_queue_participants
  after insert or update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();
