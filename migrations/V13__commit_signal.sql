-- livesync: an awake worker learns of a commit from the lock manager instead of its next
-- look at the change counter.
--
-- Why (BENCHMARKS.md, live latency): the counter moves at a transaction's first change,
-- before it commits. A worker that saw it move could only look again on its next tick, so a
-- delivery waited for the tick after the commit. Now the transaction's first change also
-- takes a transaction-level advisory lock whose key is its number on the counter; a worker
-- that saw the number waits for that lock in shared mode and is granted it the moment the
-- transaction ends. Xpert pays for one lock per transaction, held by nobody else (every
-- transaction has its own key, so Xpert's transactions never wait for each other or for a
-- worker: a worker only ever waits). The lock uses the two-key form, class 27763, which
-- stays apart from any single-key advisory lock Xpert may use.

-- A transaction's first change: number it, hold its lock until it ends, wake a sleeping
-- worker. Every name is qualified: it runs with the trigger owner's rights under the
-- caller's search_path.
create function livesync.note_change(p_payload pg_catalog.text) returns void
language plpgsql as $$
declare
  v_version pg_catalog.int8 := pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass);
begin
  perform pg_catalog.pg_advisory_xact_lock(
    27763, (v_version operator(pg_catalog.%) 2147483648)::pg_catalog.int4);
  perform livesync.wake(p_payload);
end $$;

comment on function livesync.note_change(pg_catalog.text) is
  'Called by the triggers once per transaction: advances livesync.change_version, holds the '
  'advisory lock (27763, version mod 2^31) until the transaction ends, wakes a sleeping worker.';

-- The triggers of V11 and V12, with the first change of a transaction going through
-- livesync.note_change.
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
