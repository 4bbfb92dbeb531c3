-- The triggers on Xpert's tables. They run inside Xpert's transactions, with their owner's
-- rights (Xpert's role needs no rights on livesync's tables), so:
-- - they only append to livesync.changes (no index, no foreign key, no conflict check) and
--   never update a row another Xpert transaction could wait on;
-- - they run as few SQL statements as they can: each one a trigger runs costs about as
--   much as one of Xpert's own inserts (BENCHMARKS.md, write-path cost); the rest are
--   simple expressions;
-- - a transaction's first change takes a number and the advisory lock (27763, number mod
--   2^31) to its end, and sends a NOTIFY only while every worker sleeps;
-- - every name is qualified, operators included: a caller's search_path cannot redirect
--   them (tests/it/queue.rs tries).

-- A new appointment: one change-log row for all its participants (user_id NULL, fanned out
-- when the log is expanded, after commit, when the participants are visible), in the one
-- statement of this trigger, which also checks the global switch. The appointment's id is
-- noted in the transaction-local setting livesync.new_appointment: the participant rows
-- Xpert inserts with it add nothing (their trigger returns at its first line). A
-- rolled-back savepoint undoes the note together with the row. The counter, the lock and
-- the wake-up are written out (a plpgsql call costs about as much as a trigger call).
create function livesync.on_appointment_insert() returns trigger
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

create trigger livesync_log_new_appointments
  after insert on xpert.appointments
  for each row execute function livesync.on_appointment_insert();

-- An appointment changed: one row for all its participants, written only when one of them
-- syncs (updates are rare next to inserts; this one checks more and pins its search_path).
-- Deleting an appointment cascades to its participant rows, logged below.
create function livesync.on_appointment_update() returns trigger
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

create trigger livesync_log_changed_appointments
  after update on xpert.appointments
  for each row when (old.* is distinct from new.*)
  execute function livesync.on_appointment_update();

-- A participant row inserted, updated or deleted: one log row per row (old and new), no
-- check. Once per transaction (its id is remembered in the transaction-local setting
-- livesync.tx) it reads the global switch and the licence and calls livesync.note_change;
-- with sync off, nothing is logged. Whether the user's own sync is on is decided at
-- expansion. A participant of the appointment this transaction just logged returns at once.
create function livesync.on_participant_change() returns trigger
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

create trigger livesync_log_participants
  after insert or update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();

-- A login: a durable login event (a flush request for the worker), the user's presence,
-- and a NOTIFY (logins are rare).
create function livesync.on_login_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_matched boolean;
begin
  select livesync.names_match(new.windows_username, u.username) into v_matched
  from xpert.users u where u.id = new.user_id;
  v_matched := coalesce(v_matched, false);

  insert into livesync.login_events (login_id, user_id, windows_username, matched, logged_in_at)
  values (new.id, new.user_id, new.windows_username, v_matched, new.logged_in_at)
  on conflict (login_id) do nothing;

  insert into livesync.user_state as s
    (user_id, login_id, logged_in_at, logged_out_at, login_matched)
  values (new.user_id, new.id, new.logged_in_at, new.logged_out_at, v_matched)
  on conflict (user_id) do update
    set login_id = excluded.login_id, logged_in_at = excluded.logged_in_at,
        logged_out_at = excluded.logged_out_at, login_matched = excluded.login_matched
    where s.login_id is null or s.login_id <= excluded.login_id;

  perform nextval('livesync.change_version');
  perform pg_notify('livesync_wake', 'login:' || new.user_id);
  return null;
end $$;

create trigger livesync_record_logins
  after insert on xpert.logins
  for each row execute function livesync.on_login_insert();

-- A logout (or a corrected login time) of the user's latest login.
create function livesync.on_login_update() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  update livesync.user_state
     set logged_out_at = new.logged_out_at, logged_in_at = new.logged_in_at
   where user_id = new.user_id and login_id = new.id;
  return null;
end $$;

create trigger livesync_record_logouts
  after update of logged_out_at, logged_in_at on xpert.logins
  for each row execute function livesync.on_login_update();

-- A deleted Xpert user takes livesync's rows about them along (the tables with a foreign
-- key to xpert.users cascade by themselves).
create function livesync.on_user_delete() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  delete from livesync.queue where user_id = old.id;
  delete from livesync.delivered where user_id = old.id;
  delete from livesync.dead_letters where user_id = old.id;
  delete from livesync.user_state where user_id = old.id;
  delete from livesync.login_events where user_id = old.id;
  return null;
end $$;

create trigger livesync_forget_deleted_users
  after delete on xpert.users
  for each row execute function livesync.on_user_delete();
