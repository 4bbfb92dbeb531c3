-- livesync: Xpert's transactions write one small row per change into an append-only change
-- log; workers expand it into the per-user queue afterwards.
--
-- Why (BENCHMARKS.md, write-path cost): the triggers of V3 upserted livesync.queue inside
-- Xpert's transaction, one row per participant with a primary-key probe, a conflict check
-- and a look at the worker registry each. That cost Xpert a third of its appointment-insert
-- throughput. A row in a table without any index, written by one statement, costs a
-- fraction of it. The fan-out to users, the coalescing and the primary key now run in
-- livesync.expand_changes, in a worker's transaction, outside Xpert's.
--
-- What each row means: "the calendar entry of (user_id, appointment_id) may be out of
-- date" (a participant row changed), or with user_id NULL "every participant's entry of
-- appointment_id may be" (the appointment itself changed). Expansion turns both into queue
-- entries whose intent it reads from the truth, so rows carry no intent and their order
-- does not matter.

create table livesync.changes (
  appointment_id bigint not null,
  user_id bigint,
  changed_at timestamptz not null default now()
) with (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);

comment on table livesync.changes is
  'Append-only change log written by the triggers on Xpert''s tables; no index on purpose. '
  'livesync.expand_changes moves it into livesync.queue.';

-- A participant row inserted, updated or deleted: the hot path of Xpert's appointment
-- writes, measured to the microsecond (BENCHMARKS.md). Per row it runs one insert without
-- any check. Once per transaction (the transaction id is remembered in the
-- transaction-local setting livesync.tx) it reads the global switch and the licence,
-- advances livesync.change_version (which awake workers watch) and looks whether a
-- sleeping worker needs a NOTIFY (livesync.wake); with sync off, nothing is logged.
-- Whether the user's own sync is on is decided at expansion, not here.
--
-- It runs with its owner's rights (as V8 made all triggers on Xpert's tables) but without
-- a pinned search_path: a SET clause makes every call save and restore the setting, which
-- cost more than the insert itself. Instead every name inside is schema-qualified:
-- tables, functions, operators and types, so a caller's search_path cannot redirect any
-- of them (tested in tests/it/queue.rs).
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
    -- Numbered before commit: an awake worker watching the counter looks again.
    perform pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass);
    perform livesync.wake(pg_catalog.concat(coalesce(new.user_id, old.user_id)));
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

-- An appointment changed: one row for all its participants, written only when one of them
-- syncs (updates are rare next to inserts; this one checks more and pins its search_path).
-- Deleting an appointment cascades to its participant rows, logged above.
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
    perform nextval('livesync.change_version');
    perform livesync.wake('appointment:' || new.id);
  end if;
  return null;
end $$;

-- Move the change log into the per-user queue: take up to p_limit rows (in storage order;
-- order does not matter), fan appointment rows out to their participants, keep only users
-- whose sync is active, and upsert one queue entry per (user, appointment) with the intent
-- the truth gives now (a participant: upsert; not any more: delete). An entry keeps its
-- first queue time and takes a new version, as V3's triggers did. One caller at a time
-- (the others return at once with nothing taken). Returns the log rows taken and the
-- queue entries written.
create function livesync.expand_changes(p_limit integer default 10000,
                                        out taken integer, out queued integer)
language plpgsql as $$
begin
  taken := 0;
  queued := 0;
  if not pg_try_advisory_xact_lock(hashtext('livesync.expand_changes')) then
    return;
  end if;
  with took as (
    delete from livesync.changes c
    where c.ctid = any (array(select c2.ctid from livesync.changes c2 limit p_limit))
    returning c.appointment_id, c.user_id, c.changed_at
  ),
  targets as (
    select t.user_id, t.appointment_id, t.changed_at
    from took t where t.user_id is not null
    union all
    select p.user_id, t.appointment_id, t.changed_at
    from took t
    join xpert.appointment_participants p on p.appointment_id = t.appointment_id
    where t.user_id is null
  ),
  grouped as (
    select g.user_id, g.appointment_id,
           min(g.changed_at) as first_at, max(g.changed_at) as last_at
    from targets g
    group by g.user_id, g.appointment_id
  ),
  written as (
    insert into livesync.queue as q (user_id, appointment_id, op, queued_at, changed_at)
    select g.user_id, g.appointment_id,
           case when exists (select 1 from xpert.appointment_participants p
                             where p.appointment_id = g.appointment_id
                               and p.user_id = g.user_id)
                then 'upsert' else 'delete' end,
           g.first_at, g.last_at
    from grouped g
    join livesync.user_settings u on u.user_id = g.user_id and u.live_sync_enabled
    join livesync.settings s on s.live_sync_enabled and s.cti_sync_licensed
    order by g.user_id, g.appointment_id
    on conflict (user_id, appointment_id) do update
      set op = excluded.op,
          version = excluded.version,
          changed_at = excluded.changed_at,
          attempts = 0,
          not_before = '-infinity',
          last_error = null
    returning 1
  )
  select (select count(*) from took), (select count(*) from written) into taken, queued;
end $$;

comment on function livesync.expand_changes(integer) is
  'Moves up to p_limit rows of livesync.changes into livesync.queue.';

-- Enabling a user queues their calendar from today (V3); what the log holds for them from
-- before is dropped, or expansion would add older appointments. Disabling drops what waits.
create or replace function livesync.after_user_settings_change() returns trigger
language plpgsql as $$
begin
  if new.live_sync_enabled and (tg_op = 'INSERT' or not old.live_sync_enabled) then
    delete from livesync.changes where user_id = new.user_id;
    perform livesync.queue_user_backlog(new.user_id, livesync.start_of_today());
  elsif not new.live_sync_enabled and tg_op = 'UPDATE' and old.live_sync_enabled then
    delete from livesync.changes where user_id = new.user_id;
    delete from livesync.queue where user_id = new.user_id;
  end if;
  return null;
end $$;

-- Turning the global switch or the licence off drops the change log with the queue.
create or replace function livesync.after_settings_change() returns trigger
language plpgsql as $$
declare
  v_was boolean := old.live_sync_enabled and old.cti_sync_licensed;
  v_is boolean := new.live_sync_enabled and new.cti_sync_licensed;
  v_user_id bigint;
begin
  if v_is and not v_was then
    for v_user_id in
      select u.user_id from livesync.user_settings u where u.live_sync_enabled order by u.user_id
    loop
      perform livesync.queue_user_backlog(v_user_id, livesync.start_of_today());
    end loop;
  elsif v_was and not v_is then
    delete from livesync.changes;
    delete from livesync.queue;
  end if;
  return null;
end $$;

-- What the calendar was last given of each appointment: the appointment row's version
-- (xmin and ctid, both new on every update). A queue entry whose row version the calendar
-- holds already is finished without a write: with the change log, a change can reach the
-- queue after a delivery that already read its result.
alter table livesync.delivered add column row_version text;

-- Queue everything a user's calendar should hold from p_from on, and deletes for what it
-- holds that is gone: used when a user or the global switch is turned on, and by
-- livesync-admin backfill. Returns the number of entries queued.
create or replace function livesync.queue_user_backlog(p_user_id bigint, p_from timestamptz)
returns integer language plpgsql as $$
declare
  v_count integer := 0;
  v_n integer;
begin
  if not livesync.sync_active(p_user_id) then
    return 0;
  end if;
  -- A backlog is sent in full, even what the calendar is recorded to hold already (it
  -- may have been wiped): forget the row versions that let a worker skip unchanged rows.
  update livesync.delivered set row_version = null
   where user_id = p_user_id and row_version is not null;
  insert into livesync.queue as q (user_id, appointment_id, op)
  select p_user_id, a.id, 'upsert'
  from xpert.appointment_participants p
  join xpert.appointments a on a.id = p.appointment_id
  where p.user_id = p_user_id and a.ends_at >= p_from
  order by a.id
  on conflict (user_id, appointment_id) do update
    set op = excluded.op, version = excluded.version, changed_at = now(),
        attempts = 0, not_before = '-infinity', last_error = null;
  get diagnostics v_n = row_count;
  v_count := v_count + v_n;

  insert into livesync.queue as q (user_id, appointment_id, op)
  select d.user_id, d.appointment_id, 'delete'
  from livesync.delivered d
  where d.user_id = p_user_id
    and not exists (select 1 from xpert.appointment_participants p
                    where p.user_id = d.user_id and p.appointment_id = d.appointment_id)
  order by d.appointment_id
  on conflict (user_id, appointment_id) do update
    set op = excluded.op, version = excluded.version, changed_at = now(),
        attempts = 0, not_before = '-infinity', last_error = null;
  get diagnostics v_n = row_count;
  v_count := v_count + v_n;

  if v_count > 0 then
    perform livesync.wake(p_user_id::text);
  end if;
  return v_count;
end $$;

-- Not used any more: the triggers above replace it.
drop function livesync.enqueue(bigint, bigint, text);

-- user_status as in V9; "queued" now counts what waits for a user: queue entries, and change-log rows not yet
-- expanded (a worker expands them within milliseconds; without a worker they wait here).
create or replace view livesync.user_status as
select
  u.id as user_id,
  u.username,
  (s.live_sync_enabled and s.cti_sync_licensed) as show_sync_tab,
  coalesce(us.live_sync_enabled, false) as live_sync_enabled,
  coalesce(us.keep_logfile, false) as keep_logfile,
  (s.live_sync_enabled and s.cti_sync_licensed and coalesce(us.live_sync_enabled, false)
     and coalesce(st.login_matched = false, false)) as warn_inactive,
  case when s.live_sync_enabled and s.cti_sync_licensed then
    (select n.message from livesync.notices n
      where n.user_id = u.id and n.shown_at is null
      order by n.id limit 1)
  end as pending_notice,
  (select count(*) from (
     select q.appointment_id from livesync.queue q where q.user_id = u.id
     union
     select c.appointment_id from livesync.changes c
      where c.user_id = u.id and coalesce(us.live_sync_enabled, false)
     union
     select c.appointment_id from livesync.changes c
       join xpert.appointment_participants p
         on p.appointment_id = c.appointment_id and p.user_id = u.id
      where c.user_id is null and coalesce(us.live_sync_enabled, false)
   ) w) as queued,
  st.last_synced_at
from xpert.users u
cross join livesync.settings s
left join livesync.user_settings us on us.user_id = u.id
left join livesync.user_state st on st.user_id = u.id;
