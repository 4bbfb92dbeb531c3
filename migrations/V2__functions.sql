-- livesync's functions, and the triggers on its own tables. The triggers on Xpert's tables
-- follow in V3. Functions that run with their owner's rights (SECURITY DEFINER) or inside
-- Xpert's transactions qualify every name they use, operators included, so that no
-- caller's search_path can redirect them.

-- ── Who syncs ──────────────────────────────────────────────────────────────────────────

-- The login rule: a Windows name matches an Xpert user name when both are equal after
-- trimming blanks, dropping a "DOMAIN\" prefix and an "@domain" suffix, NFC normalisation
-- and full Unicode case folding (upper then lower, so "ß" matches "SS"). ICU is used where
-- the server has it; the fallback is the database's default collation.
do $body$
declare
  v_collate text := '';
  v_normalize_open text := '';
  v_normalize_close text := '';
begin
  if exists (select 1 from pg_collation where collname = 'und-x-icu') then
    v_collate := ' collate "und-x-icu"';
  end if;
  if current_setting('server_encoding') = 'UTF8' then
    v_normalize_open := 'normalize(';
    v_normalize_close := ', NFC)';
  end if;
  execute format($f$
    create function livesync.login_name(p_name text) returns text
    language sql immutable parallel safe as $sql$
      select nullif(lower(upper(%1$s
        regexp_replace(
          regexp_replace(
            regexp_replace(coalesce(p_name, ''), '^.*\\', ''),
            '@.*$', ''),
          '^[[:space:]]+|[[:space:]]+$', '', 'g')
        %2$s%3$s)), '')
    $sql$ $f$, v_normalize_open, v_normalize_close, v_collate);
end
$body$;
comment on function livesync.login_name(text) is
  'The login rule''s canonical form of a Windows or Xpert user name (NULL when empty).';

create function livesync.names_match(p_windows_username text, p_xpert_username text)
returns boolean language sql immutable parallel safe as $$
  select coalesce(livesync.login_name(p_windows_username) = livesync.login_name(p_xpert_username), false)
$$;

-- "Sync active" for a user: global switch on, licensed, and the user's own switch on.
create function livesync.sync_active(p_user_id bigint) returns boolean
language sql stable as $$
  select coalesce(s.live_sync_enabled and s.cti_sync_licensed
                  and (select u.live_sync_enabled from livesync.user_settings u
                       where u.user_id = p_user_id), false)
  from livesync.settings s
$$;

-- Midnight today in the firm's time zone: a backlog starts there.
create function livesync.start_of_today() returns timestamptz
language sql stable as $$
  select date_trunc('day', now() at time zone s.time_zone) at time zone s.time_zone
  from livesync.settings s
$$;

-- ── Waking a worker ────────────────────────────────────────────────────────────────────

-- NOTIFY a sleeping worker, only while every live worker sleeps (livesync.wake_until): a
-- NOTIFY makes its transaction's commit wait for every other NOTIFYing commit, so it must
-- stay the exception. Every name is qualified: it runs inside Xpert's transactions.
create function livesync.wake(p_payload text) returns void
language plpgsql as $$
begin
  if pg_catalog.pg_sequence_last_value('livesync.wake_until'::pg_catalog.regclass)
       operator(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) then
    perform pg_catalog.pg_notify('livesync_wake', p_payload);
  end if;
end $$;

-- A transaction's first change: take a number, hold the advisory lock (27763, number mod
-- 2^31) until the transaction ends (a worker going to sleep waits for it, see
-- livesync.worker_sleeps), wake a sleeping worker.
create function livesync.note_change(p_payload text) returns void
language plpgsql as $$
declare
  v_version pg_catalog.int8 := pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass);
begin
  perform pg_catalog.pg_advisory_xact_lock(
    27763, (v_version operator(pg_catalog.%) 2147483648)::pg_catalog.int4);
  perform livesync.wake(p_payload);
end $$;
comment on function livesync.note_change(text) is
  'Called by the triggers once per transaction: advances livesync.change_version, holds the '
  'advisory lock (27763, version mod 2^31) until the transaction ends, wakes a sleeping worker.';

-- Recompute livesync.wake_until from livesync.workers (their statement trigger, below):
-- 0 while any live worker is awake, else the newest heartbeat of the sleeping ones + 30 s.
-- Serialised by an advisory lock (27763, -1; change locks are never negative), so that two
-- workers changing state at once cannot leave a value computed from a view that misses the
-- other's change. With the owner's rights: a worker's role may read the sequence, not set it.
create function livesync.recompute_wake_until() returns trigger
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
  for each statement execute function livesync.recompute_wake_until();

-- ── The change log into the queue ──────────────────────────────────────────────────────

-- Move the change log into the per-user queue: take up to p_limit rows (in storage order;
-- order does not matter), fan appointment rows out to their participants, keep only users
-- whose sync is active, and upsert one queue entry per (user, appointment) with the intent
-- the truth gives now (a participant: upsert; not any more: delete). An entry keeps its
-- first queue time and takes a new version. One caller at a time (the others return at once
-- with nothing taken). Returns the log rows taken and the queue entries written.
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

-- Queue everything a user's calendar should hold from p_from on, and deletes for what it
-- holds that is gone: used when a user or the global switch is turned on, and by
-- livesync-admin backfill. A backlog is sent in full, even what the calendar is recorded
-- to hold already (it may have been wiped). Returns the number of entries queued.
create function livesync.queue_user_backlog(p_user_id bigint, p_from timestamptz)
returns integer language plpgsql as $$
declare
  v_count integer := 0;
  v_n integer;
begin
  if not livesync.sync_active(p_user_id) then
    return 0;
  end if;
  -- Forget the row versions that let a worker skip unchanged rows.
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

-- ── The worker's looks for work ────────────────────────────────────────────────────────

-- Whether the worker holding presence lock p_key is gone: its session-level lock is free.
-- Asks in shared mode (held to the end of the caller's transaction), so it never waits and
-- never blocks the holder. Never called on the holder's own session.
create function livesync.presence_gone(p_key integer) returns boolean
language sql volatile as $$
  select pg_catalog.pg_try_advisory_xact_lock_shared(27764, p_key)
$$;

-- One look for work, in one statement and one transaction:
-- - p_mark 'awake': the worker says it watches for work by itself (the triggers stop
--   sending NOTIFY, see livesync.wake_until); 'alive': a heartbeat only; NULL: nothing.
--   registered is false when the worker's row is gone (it registers again).
-- - the change log is expanded into the queue (up to p_expand_limit rows: taken);
-- - logins_pending says whether logins wait (the worker handles them before claiming);
-- - then up to p_claim_limit users with deliverable work are leased to p_worker (claims:
--   a JSON array). A user's lease is free when it was released, has expired, or its
--   holder's presence lock is gone; taking over a lease marks the user's queued entries
--   the calendar has no record of "maybe delivered" (sequence -1), see the worker's
--   claim module.
-- Commits asynchronously unless it claimed someone: a lease must be durable before any
-- calendar is written, an expansion is redone from the log if lost.
-- Users' queue entries are probed per user (a scalar subquery is never turned into a
-- join): the plan does not depend on the queue's statistics.
create function livesync.next_work(
  p_worker uuid, p_lock_key integer, p_mark text,
  p_expand_limit integer, p_claim_limit integer,
  p_session interval, p_lease interval,
  out registered boolean, out taken integer, out logins_pending boolean, out claims jsonb)
language plpgsql as $$
declare
  v_push boolean;
  v_active boolean;
begin
  perform set_config('synchronous_commit', 'off', true);
  registered := true;
  if p_mark is not null then
    update livesync.workers
       set heartbeat_at = now(), awake = awake or p_mark = 'awake'
     where id = p_worker;
    registered := found;
  end if;
  taken := 0;
  if exists (select from livesync.changes) then
    select e.taken into taken from livesync.expand_changes(p_expand_limit) e;
  end if;
  logins_pending := exists (select from livesync.login_events e where e.processed_at is null);
  claims := '[]';
  if taken >= p_expand_limit or logins_pending or p_claim_limit <= 0 then
    return;
  end if;
  select s.delivery_mode = 'push', s.live_sync_enabled and s.cti_sync_licensed
    into v_push, v_active
    from livesync.settings s;
  if not coalesce(v_active, false) then
    return;
  end if;
  with picked as (
    select st.user_id, st.lease_token is not null as taken_over
      from livesync.user_state st
      join livesync.user_settings us on us.user_id = st.user_id and us.live_sync_enabled
     where case
             when st.lease_token is null then true
             when st.lease_expires_at < now() then true
             when st.lease_key is null then false
             else livesync.presence_gone(st.lease_key)
           end
       and (v_push
            or st.flush_requested_at is not null
            or (st.login_matched and st.logged_out_at is null
                and st.logged_in_at > now() - p_session))
       and (select true from livesync.queue q
             where q.user_id = st.user_id and q.not_before <= now()
             limit 1)
     order by st.last_synced_at nulls first, st.user_id
     limit p_claim_limit
       for update of st skip locked
  ),
  marked as (
    insert into livesync.delivered (user_id, appointment_id, uid, version, sequence)
    select q.user_id, q.appointment_id, 'xpert-termin-' || q.appointment_id || '@livesync', 0, -1
      from picked p
      join livesync.queue q on q.user_id = p.user_id
     where p.taken_over
     order by q.user_id, q.appointment_id
    on conflict (user_id, appointment_id) do nothing
  ),
  leased as (
    update livesync.user_state st
       set lease_owner = p_worker::text, lease_key = p_lock_key,
           lease_token = gen_random_uuid(), lease_expires_at = now() + p_lease
      from picked
     where st.user_id = picked.user_id
    returning st.user_id, st.lease_token
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'user_id', l.user_id,
           'username', coalesce(u.username, 'user-' || l.user_id),
           'keep_logfile', coalesce(us.keep_logfile, false),
           'calendar_address', us.calendar_address,
           'token', l.lease_token)), '[]')
    into claims
    from leased l
    left join xpert.users u on u.id = l.user_id
    left join livesync.user_settings us on us.user_id = l.user_id;
  if jsonb_array_length(claims) > 0 then
    perform set_config('synchronous_commit', 'on', true);
  end if;
end $$;
comment on function livesync.next_work(uuid, integer, text, integer, integer, interval, interval) is
  'A worker''s look for work: heartbeat, expand the change log, see whether logins wait, '
  'lease users with deliverable work. One statement, one transaction.';

-- A worker that found nothing to do goes to sleep: marked asleep (from now on the triggers
-- send NOTIFY, see livesync.wake_until), then the transactions that may have read "awake"
-- before and not committed yet: every open transaction holding a change lock (27763, n).
-- Read in this order, each in a snapshot of its own, a transaction that read "awake"
-- either is in that list or had committed before the look at the log that follows
-- (visible: more work). The worker waits for the listed transactions' locks (each is
-- released when its transaction ends) and looks once more after each.
create function livesync.worker_sleeps(p_worker uuid,
  out registered boolean, out in_flight integer[], out more boolean)
language plpgsql as $$
begin
  perform set_config('synchronous_commit', 'off', true);
  update livesync.workers set awake = false, heartbeat_at = now() where id = p_worker;
  registered := found;
  select coalesce(array_agg(l.objid::bigint::integer order by l.objid), '{}')
    into in_flight
    from pg_catalog.pg_locks l
   where l.locktype = 'advisory' and l.classid = 27763 and l.objsubid = 2 and l.granted
     and l.objid < 2147483648;
  more := exists (select from livesync.changes)
       or exists (select from livesync.login_events e where e.processed_at is null);
end $$;
comment on function livesync.worker_sleeps(uuid) is
  'Marks a worker asleep and returns the open transactions with changes it must still wait '
  'for, and whether work is visible already.';

-- ── What Xpert reads and calls ─────────────────────────────────────────────────────────

-- Xpert calls this after showing the pending notice(s); returns how many were marked.
create function livesync.notice_shown(p_user_id bigint) returns integer
language sql security definer set search_path = pg_catalog, pg_temp as $$
  with marked as (
    update livesync.notices set shown_at = now()
    where user_id = p_user_id and shown_at is null
    returning 1)
  select count(*)::integer from marked
$$;

-- What will change in a user's calendar: queue entries and change-log rows not expanded
-- yet, each appointment once, counting only those that will write or delete something:
-- the appointment is there and the user takes part (and the calendar does not hold that
-- very row version already), or it is not, and the calendar holds it or may hold it (a
-- delivery to this user is under way, or was cut off: its outcome is not recorded yet).
-- Runs with its owner's rights (Xpert reads it through livesync.user_status), and with
-- the planner settings of livesync's own sessions (index lookups whatever the statistics
-- say, no JIT; see the worker's session settings).
create function livesync.pending_changes(p_user_id bigint) returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off as $$
declare
  v_enabled boolean;
  v_leased boolean;
  v_count bigint;
begin
  select u.live_sync_enabled into v_enabled
    from livesync.user_settings u where u.user_id = p_user_id;
  select s.lease_token is not null into v_leased
    from livesync.user_state s where s.user_id = p_user_id;
  select count(*) into v_count
    from (select q.appointment_id from livesync.queue q where q.user_id = p_user_id
          union
          select c.appointment_id from livesync.changes c
           where coalesce(v_enabled, false) and c.user_id = p_user_id
          union
          select c.appointment_id from livesync.changes c
           where coalesce(v_enabled, false) and c.user_id is null
             and exists (select from xpert.appointment_participants p
                          where p.appointment_id = c.appointment_id
                            and p.user_id = p_user_id)) w
   where case
           when exists (select from xpert.appointment_participants p
                         where p.appointment_id = w.appointment_id and p.user_id = p_user_id)
           then not exists (select from livesync.delivered d
                              join xpert.appointments a on a.id = d.appointment_id
                             where d.user_id = p_user_id and d.appointment_id = w.appointment_id
                               and d.sequence >= 0
                               and d.row_version = a.xmin::text || '/' || a.ctid::text)
           else coalesce(v_leased, false)
             or exists (select from livesync.delivered d
                         where d.user_id = p_user_id and d.appointment_id = w.appointment_id)
         end;
  return v_count;
end $$;
comment on function livesync.pending_changes(bigint) is
  'How many of a user''s appointments will change in their calendar (queued or logged, not delivered yet).';

-- ── Triggers on livesync's own tables ──────────────────────────────────────────────────

-- The firm's time zone must be one PostgreSQL knows.
create function livesync.check_settings() returns trigger
language plpgsql as $$
begin
  if not exists (select 1 from pg_timezone_names where name = new.time_zone) then
    raise exception 'livesync.settings.time_zone: unknown time zone "%"', new.time_zone
      using hint = 'Use an IANA name such as Europe/Vienna.';
  end if;
  new.updated_at := now();
  return new;
end $$;
create trigger livesync_settings_check before insert or update on livesync.settings
  for each row execute function livesync.check_settings();

-- Turning the global switch and the licence on queues every enabled user's calendar from
-- today; turning either off drops the change log and the queue.
create function livesync.settings_backlog() returns trigger
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
create trigger livesync_settings_backlog
  after update on livesync.settings
  for each row execute function livesync.settings_backlog();

create function livesync.touch_user_settings() returns trigger
language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    new.updated_at := now();
  end if;
  return new;
end $$;
create trigger livesync_user_settings_touch
  before update on livesync.user_settings
  for each row execute function livesync.touch_user_settings();

-- Enabling a user queues their calendar from today and drops what the log holds for them
-- from before. Rows for every participant of an appointment cannot be dropped (the other
-- participants need them): those of this user's appointments are split into rows for the
-- other participants, so what they cover reaches this user through the backlog only.
-- Disabling drops what waits.
create function livesync.user_settings_backlog() returns trigger
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
create trigger livesync_user_settings_backlog
  after insert or update of live_sync_enabled on livesync.user_settings
  for each row execute function livesync.user_settings_backlog();

-- Every enabled user has a user_state row (presence, lease), also one who never logged in:
-- in push mode their calendar is served without a login.
create function livesync.ensure_user_state() returns trigger
language plpgsql as $$
begin
  insert into livesync.user_state (user_id) values (new.user_id)
  on conflict (user_id) do nothing;
  return null;
end $$;
create trigger livesync_user_settings_state
  after insert on livesync.user_settings
  for each row execute function livesync.ensure_user_state();
