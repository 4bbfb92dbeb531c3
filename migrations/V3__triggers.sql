-- livesync: the triggers that fill the queue from Xpert's own writes.
--
-- Cost rule: these run inside Xpert's transactions. They take no lock that another Xpert
-- transaction could wait on (no foreign keys, no shared counter rows) and send a NOTIFY
-- only while every running worker sleeps: a NOTIFY serialises all committing transactions
-- on one lock, so it must stay the exception. A worker that is awake notices new work by
-- watching livesync.change_version instead.

-- "Sync active" for a user: global switch on, licensed, and the user's own switch on.
create function livesync.sync_active(p_user_id bigint) returns boolean
language sql stable as $$
  select coalesce(s.live_sync_enabled and s.cti_sync_licensed
                  and (select u.live_sync_enabled from livesync.user_settings u
                       where u.user_id = p_user_id), false)
  from livesync.settings s
$$;

-- Wake a sleeping worker, but only when no worker is awake: an awake worker watches
-- livesync.change_version and needs no notification. With no worker registered at all
-- nobody listens, so nothing is sent either; the queue keeps the work.
create function livesync.wake(p_payload text) returns void
language plpgsql as $$
declare
  v_sleeping boolean;
  v_awake boolean;
begin
  select bool_or(not w.awake), bool_or(w.awake) into v_sleeping, v_awake
  from livesync.workers w
  where w.heartbeat_at > now() - interval '30 seconds';
  if coalesce(v_sleeping, false) and not coalesce(v_awake, false) then
    perform pg_notify('livesync_wake', p_payload);
  end if;
end $$;

-- Queue one change for one user, coalescing with what is already waiting: the entry keeps
-- its first queue time and takes the new intent and a new version.
create function livesync.enqueue(p_user_id bigint, p_appointment_id bigint, p_op text)
returns void language plpgsql as $$
begin
  if not livesync.sync_active(p_user_id) then
    return;
  end if;
  insert into livesync.queue as q (user_id, appointment_id, op)
  values (p_user_id, p_appointment_id, p_op)
  on conflict (user_id, appointment_id) do update
    set op = excluded.op,
        version = excluded.version,
        changed_at = now(),
        attempts = 0,
        not_before = '-infinity',
        last_error = null;
  perform livesync.wake(p_user_id::text);
end $$;

-- The hot path: Xpert adding a participant. It runs as few statements as possible (each
-- statement a trigger runs costs about as much as one of Xpert's own inserts): the
-- sync-active check is part of the insert, and the worker check only follows when
-- something was queued. livesync.enqueue and livesync.wake do the same for the rare paths.
create function livesync.on_participant_change() returns trigger
language plpgsql as $$
declare
  v_sleeping boolean;
  v_awake boolean;
begin
  if tg_op = 'DELETE'
     or (tg_op = 'UPDATE'
         and (old.user_id, old.appointment_id) is distinct from (new.user_id, new.appointment_id)) then
    perform livesync.enqueue(old.user_id, old.appointment_id, 'delete');
  end if;
  if tg_op = 'DELETE' then
    return null;
  end if;
  insert into livesync.queue as q (user_id, appointment_id, op)
  select new.user_id, new.appointment_id, 'upsert'
  from livesync.settings s
  join livesync.user_settings u on u.user_id = new.user_id
  where s.live_sync_enabled and s.cti_sync_licensed and u.live_sync_enabled
  on conflict (user_id, appointment_id) do update
    set op = excluded.op,
        version = excluded.version,
        changed_at = now(),
        attempts = 0,
        not_before = '-infinity',
        last_error = null;
  if found then
    select bool_or(not w.awake), bool_or(w.awake) into v_sleeping, v_awake
    from livesync.workers w
    where w.heartbeat_at > now() - interval '30 seconds';
    if v_sleeping and not v_awake then
      perform pg_notify('livesync_wake', new.user_id::text);
    end if;
  end if;
  return null;
end $$;

create trigger livesync_queue_participants
  after insert or update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();

-- A changed appointment goes to every participant. Deleting an appointment cascades to its
-- participants, whose trigger queues the deletes.
create function livesync.on_appointment_update() returns trigger
language plpgsql as $$
declare
  v_sleeping boolean;
  v_awake boolean;
begin
  -- One statement for all participants, in user order (the same lock order everywhere).
  insert into livesync.queue as q (user_id, appointment_id, op)
  select p.user_id, new.id, 'upsert'
  from xpert.appointment_participants p
  join livesync.user_settings u on u.user_id = p.user_id and u.live_sync_enabled
  join livesync.settings s on s.live_sync_enabled and s.cti_sync_licensed
  where p.appointment_id = new.id
  order by p.user_id
  on conflict (user_id, appointment_id) do update
    set op = excluded.op,
        version = excluded.version,
        changed_at = now(),
        attempts = 0,
        not_before = '-infinity',
        last_error = null;
  if found then
    select bool_or(not w.awake), bool_or(w.awake) into v_sleeping, v_awake
    from livesync.workers w
    where w.heartbeat_at > now() - interval '30 seconds';
    if v_sleeping and not v_awake then
      perform pg_notify('livesync_wake', 'appointment:' || new.id);
    end if;
  end if;
  return null;
end $$;

create trigger livesync_queue_appointments
  after update on xpert.appointments
  for each row when (old.* is distinct from new.*)
  execute function livesync.on_appointment_update();

-- Queue everything a user's calendar should hold from p_from on, and deletes for what it
-- holds that is gone: used when a user or the global switch is turned on, and by
-- livesync-admin backfill. Returns the number of entries queued.
create function livesync.queue_user_backlog(p_user_id bigint, p_from timestamptz)
returns integer language plpgsql as $$
declare
  v_count integer := 0;
  v_n integer;
begin
  if not livesync.sync_active(p_user_id) then
    return 0;
  end if;
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

-- The start of today in the firm's time zone: where an enabled calendar starts.
create function livesync.start_of_today() returns timestamptz
language sql stable as $$
  select date_trunc('day', now() at time zone s.time_zone) at time zone s.time_zone
  from livesync.settings s
$$;

-- Turning a user on queues their calendar from today; turning them off drops what waits.
create function livesync.on_user_settings_change() returns trigger
language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    new.updated_at := now();
  end if;
  return new;
end $$;

create trigger livesync_user_settings_touch
  before update on livesync.user_settings
  for each row execute function livesync.on_user_settings_change();

create function livesync.after_user_settings_change() returns trigger
language plpgsql as $$
begin
  if new.live_sync_enabled and (tg_op = 'INSERT' or not old.live_sync_enabled) then
    perform livesync.queue_user_backlog(new.user_id, livesync.start_of_today());
  elsif not new.live_sync_enabled and tg_op = 'UPDATE' and old.live_sync_enabled then
    delete from livesync.queue where user_id = new.user_id;
  end if;
  return null;
end $$;

create trigger livesync_user_settings_queue
  after insert or update of live_sync_enabled on livesync.user_settings
  for each row execute function livesync.after_user_settings_change();

-- The same for the global switch and the licence, for every enabled user at once.
create function livesync.after_settings_change() returns trigger
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
    delete from livesync.queue;
  end if;
  return null;
end $$;

create trigger livesync_settings_queue
  after update on livesync.settings
  for each row execute function livesync.after_settings_change();

-- A login: record it durably as a flush request (rule 4), keep the user's presence, and
-- wake the workers (logins are rare; a NOTIFY here costs nothing measurable).
create function livesync.on_login_insert() returns trigger
language plpgsql as $$
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

create trigger livesync_login_insert
  after insert on xpert.logins
  for each row execute function livesync.on_login_insert();

create function livesync.on_login_update() returns trigger
language plpgsql as $$
begin
  update livesync.user_state
     set logged_out_at = new.logged_out_at, logged_in_at = new.logged_in_at
   where user_id = new.user_id and login_id = new.id;
  return null;
end $$;

create trigger livesync_login_update
  after update of logged_out_at, logged_in_at on xpert.logins
  for each row execute function livesync.on_login_update();

-- Xpert deleting a user removes what livesync kept for them (the tables above carry no
-- foreign keys to Xpert's tables on purpose).
create function livesync.on_user_delete() returns trigger
language plpgsql as $$
begin
  delete from livesync.queue where user_id = old.id;
  delete from livesync.delivered where user_id = old.id;
  delete from livesync.user_state where user_id = old.id;
  delete from livesync.login_events where user_id = old.id;
  return null;
end $$;

create trigger livesync_user_delete
  after delete on xpert.users
  for each row execute function livesync.on_user_delete();
