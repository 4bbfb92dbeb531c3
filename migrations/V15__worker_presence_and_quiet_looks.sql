-- livesync: a worker's presence, one statement per look for work, and the status Xpert
-- reads at every program start.
--
-- 1. Presence. A worker holds the session-level advisory lock (27764, workers.lock_key)
--    on its listening connection for as long as it lives; a claim records that key with
--    the lease (user_state.lease_key). When the worker's session ends (the process died,
--    the server restarted), the lock is gone, and the next claim takes its users over at
--    once instead of waiting for the lease to expire. The lease's expiry stays the rule
--    for a worker whose session lives on (a host cut off from the network) and for
--    workers without presence (poll-only mode behind a transaction pooler: key NULL).
-- 2. livesync.next_work: a worker's look for work in one statement (heartbeat, the change
--    log expanded, logins pending, users claimed), and livesync.worker_sleeps: the
--    transactions a worker going to sleep must still wait for.
-- 3. livesync.user_status: the firm's settings are read as the one row they are, and the
--    queue count is a function call per user, so that the view's plan and its cost do not
--    depend on the statistics of livesync's tables (a stale estimate made PostgreSQL
--    JIT-compile the view for every read). "queued" counts what will change in the
--    person's calendar: an appointment created and deleted before they logged in does
--    not count.

create sequence livesync.worker_lock_key as integer minvalue 1 cycle;

comment on sequence livesync.worker_lock_key is
  'Keys of the presence locks (27764, key) that live workers hold on their listening connection.';

alter table livesync.workers add column lock_key integer;
comment on column livesync.workers.lock_key is
  'The presence lock (27764, lock_key) this worker holds while its session lives; NULL in poll-only mode.';

alter table livesync.user_state add column lease_key integer;
comment on column livesync.user_state.lease_key is
  'The presence lock key of the worker holding the lease: once that lock is free, the lease is over.';

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

-- The status Xpert's UI reads. The settings are one row (a LIMIT 1 subquery tells the
-- planner so); "queued" is livesync.pending_changes, a call per row.
create or replace view livesync.user_status as
select
  u.id as user_id,
  u.username,
  cfg.active as show_sync_tab,
  coalesce(us.live_sync_enabled, false) as live_sync_enabled,
  coalesce(us.keep_logfile, false) as keep_logfile,
  (cfg.active and coalesce(us.live_sync_enabled, false)
     and coalesce(st.login_matched = false, false)) as warn_inactive,
  case when cfg.active then
    (select n.message from livesync.notices n
      where n.user_id = u.id and n.shown_at is null
      order by n.id limit 1)
  end as pending_notice,
  livesync.pending_changes(u.id) as queued,
  st.last_synced_at
from xpert.users u
cross join (select s.live_sync_enabled and s.cti_sync_licensed as active
              from livesync.settings s limit 1) cfg
left join livesync.user_settings us on us.user_id = u.id
left join livesync.user_state st on st.user_id = u.id;
