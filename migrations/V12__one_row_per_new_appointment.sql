-- livesync: a new appointment and its participants cost Xpert one change-log row and one
-- trigger call, not one of each per participant.
--
-- Why (BENCHMARKS.md, write-path cost): after V11 what was left of livesync in Xpert's
-- insert was, per participant row, a plpgsql call and an insert into livesync.changes.
-- Xpert writes an appointment and then its participants in the same transaction. Now the
-- appointment insert logs one row "every participant of this appointment" (user_id NULL,
-- fanned out at expansion, after commit, when the participants are visible) and notes the
-- appointment's id in the transaction-local setting livesync.new_appointment. A participant
-- insert of that very appointment is then skipped by the trigger's WHEN condition, which
-- PostgreSQL evaluates without calling any function written in plpgsql.
--
-- Why skipping is safe: the setting says "the row (id, NULL) was logged in this
-- transaction". Both are undone together: a rolled-back savepoint restores the setting as
-- it drops the row, and at commit the setting ends with the transaction. Removing a
-- participant and changing one are always logged per row (expansion cannot see who was
-- removed), as are participants added to an appointment of an earlier transaction.

-- The once-per-transaction wake-up, with every name qualified: it runs with the trigger
-- owner's rights, under the caller's search_path.
create or replace function livesync.wake(p_payload pg_catalog.text) returns void
language plpgsql as $$
declare
  v_sleeping pg_catalog.bool;
  v_awake pg_catalog.bool;
begin
  select pg_catalog.bool_or(not w.awake), pg_catalog.bool_or(w.awake)
    into v_sleeping, v_awake
  from livesync.workers w
  -- (Parenthesised: operator(...) binds all operators alike, left to right.)
  where w.heartbeat_at operator(pg_catalog.>)
        (pg_catalog.now() operator(pg_catalog.-) '30 seconds'::pg_catalog.interval);
  if coalesce(v_sleeping, false) and not coalesce(v_awake, false) then
    perform pg_catalog.pg_notify('livesync_wake', p_payload);
  end if;
end $$;

-- A new appointment: one row for all its participants. The transaction's first change
-- does what V11's participant trigger does (switch, counter, wake-up); every name is
-- qualified for the same reason as there.
create function livesync.on_appointment_insert() returns trigger
language plpgsql security definer as $$
declare
  v_xid pg_catalog.text := pg_catalog.pg_current_xact_id()::pg_catalog.text;
  v_state pg_catalog.text := pg_catalog.current_setting('livesync.tx', true);
begin
  if v_state is null or v_state operator(pg_catalog.<>) v_xid then
    if v_state operator(pg_catalog.=) pg_catalog.concat('off:', v_xid) then
      return null;
    end if;
    if not exists (select from livesync.settings s
                   where s.live_sync_enabled and s.cti_sync_licensed) then
      perform pg_catalog.set_config('livesync.tx', pg_catalog.concat('off:', v_xid), true);
      return null;
    end if;
    perform pg_catalog.set_config('livesync.tx', v_xid, true);
    perform pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass);
    perform livesync.wake(pg_catalog.concat('appointment:', new.id));
  end if;
  insert into livesync.changes (appointment_id, user_id) values (new.id, null);
  perform pg_catalog.set_config('livesync.new_appointment', new.id::pg_catalog.text, true);
  return null;
end $$;

create trigger livesync_log_new_appointments
  after insert on xpert.appointments
  for each row execute function livesync.on_appointment_insert();

-- The participant trigger of V3, split: inserts only when their appointment is not the one
-- this transaction just logged; updates and deletes always.
drop trigger livesync_queue_participants on xpert.appointment_participants;

create trigger livesync_queue_new_participants
  after insert on xpert.appointment_participants
  for each row
  when (pg_catalog.current_setting('livesync.new_appointment', true)
          is distinct from new.appointment_id::pg_catalog.text)
  execute function livesync.on_participant_change();

create trigger livesync_queue_participants
  after update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();

-- Enabling a user queues their calendar from today (V3) and drops what the log holds for
-- them from before (V11). Rows for every participant of an appointment cannot be dropped:
-- the other participants need them. Those of this user's appointments are split into rows
-- for the other participants, so what they cover reaches this user through the backlog
-- only (a row not committed yet is not seen here and reaches the user as a new change).
create or replace function livesync.after_user_settings_change() returns trigger
language plpgsql as $$
begin
  if new.live_sync_enabled and (tg_op = 'INSERT' or not old.live_sync_enabled) then
    delete from livesync.changes where user_id = new.user_id;
    with split as (
      delete from livesync.changes c
       where c.user_id is null
         and exists (select 1 from xpert.appointment_participants p
                      where p.appointment_id = c.appointment_id and p.user_id = new.user_id)
      returning c.appointment_id, c.changed_at
    )
    insert into livesync.changes (appointment_id, user_id, changed_at)
    select s.appointment_id, p.user_id, s.changed_at
      from split s
      join xpert.appointment_participants p on p.appointment_id = s.appointment_id
     where p.user_id <> new.user_id;
    perform livesync.queue_user_backlog(new.user_id, livesync.start_of_today());
  elsif not new.live_sync_enabled and tg_op = 'UPDATE' and old.live_sync_enabled then
    delete from livesync.changes where user_id = new.user_id;
    delete from livesync.queue where user_id = new.user_id;
  end if;
  return null;
end $$;
