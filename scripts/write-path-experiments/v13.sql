-- Experiment for scripts/write-path-instructions.sh: a copy of B with V13's triggers restored
-- (V12's livesync.wake, the participant insert trigger with WHEN), to count V14 against V13.

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
create or replace function livesync.on_participant_change() returns trigger
language plpgsql security definer as $$
declare
  v_xid pg_catalog.text := pg_catalog.pg_current_xact_id()::pg_catalog.text;
  v_state pg_catalog.text := pg_catalog.current_setting('livesync.tx', true);
begin
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

create or replace function livesync.on_appointment_insert() returns trigger
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
    perform livesync.note_change(pg_catalog.concat('appointment:', new.id));
  end if;
  insert into livesync.changes (appointment_id, user_id) values (new.id, null);
  perform pg_catalog.set_config('livesync.new_appointment', new.id::pg_catalog.text, true);
  return null;
end $$;

create or replace function livesync.on_appointment_update() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_xid text := pg_current_xact_id()::text;
begin
  insert into livesync.changes (appointment_id, user_id)
  select new.id, null
  from livesync.settings s
  where s.live_sync_enabled and s.cti_sync_licensed
    and exists (select 1 from xpert.appointment_participants p
                join livesync.user_settings u on u.user_id = p.user_id and u.live_sync_enabled
                where p.appointment_id = new.id);
  if found and current_setting('livesync.tx', true) is distinct from v_xid then
    perform set_config('livesync.tx', v_xid, true);
    perform livesync.note_change('appointment:' || new.id);
  end if;
  return null;
end $$;

drop trigger livesync_queue_participants on xpert.appointment_participants;
drop trigger livesync_wake_until on livesync.workers;
create trigger livesync_queue_new_participants
  after insert on xpert.appointment_participants
  for each row
  when (pg_catalog.current_setting('livesync.new_appointment', true)
          is distinct from new.appointment_id::pg_catalog.text)
  execute function livesync.on_participant_change();
create trigger livesync_queue_participants
  after update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();
