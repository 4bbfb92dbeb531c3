-- livesync's tables, in schema livesync. Xpert's own tables (schema xpert) are only read;
-- they get the triggers of V3. Map (ARCHITECTURE.md has the same with what writes what):
--   settings        the firm's switches: live sync on, licence, Exchange, delivery mode, zone
--   user_settings   per person: live sync on, keep a log file, calendar address
--   first_login     the update's existing users and what their first login decided
--   notices         one-time messages Xpert shows at program start
--   changes         the change log the triggers append to (no index: Xpert pays for it)
--   queue           per (person, appointment): the intent still to deliver
--   delivered       per (person, appointment): what that person's calendar holds
--   dead_letters    entries that failed too often, waiting for an admin
--   user_state      per person: latest login, flush request, delivery lease
--   login_events    every login, a durable flush request
--   workers         running workers: awake or asleep, heartbeat, presence lock

create schema if not exists livesync;

-- "Einstellungen/Konfiguration/Kalender/Termine-Fristen/Outlook Synchronisation": one row.
create table livesync.settings (
  id boolean primary key default true check (id),
  live_sync_enabled boolean not null default false,  -- "Live Synchronisation ein"
  cti_sync_licensed boolean not null default false,  -- licence module CTI/Synchronisierung
  exchange_server boolean not null default false,    -- the firm runs an Exchange Server
  delivery_mode text not null default 'live'
    check (delivery_mode in ('live', 'push')),       -- push: deliver without waiting for a login
  time_zone text not null default 'Europe/Vienna',   -- the firm's zone (all-day dates, "today")
  installed_at timestamptz not null default now(),   -- the moment of "the update"
  updated_at timestamptz not null default now()
);
insert into livesync.settings default values;

-- "Benutzereinstellung / Outlook Terminsynchronisation (tm)". A user without a row reads as
-- not enabled.
create table livesync.user_settings (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  live_sync_enabled boolean not null default false,  -- "Live-Synchronisation aktivieren"
  keep_logfile boolean not null default false,       -- "Logfile für Live Synchronisation führen"
  updated_at timestamptz not null default now(),
  calendar_address text
);
comment on column livesync.user_settings.calendar_address is
  'Override of the calendar location for this user (Graph mailbox or CalDAV URL); NULL = template.';

-- The users that existed when livesync was installed ("existing users" of the update) and
-- what their first login after the update decided. Users created later have no row.
create table livesync.first_login (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  state text not null default 'pending'
    check (state in ('pending', 'enabled', 'names_differ', 'admin')),
  login_id bigint,              -- the login that decided it
  decided_at timestamptz
);
comment on column livesync.first_login.state is
  'pending until the first login after the update decides: enabled (names matched), '
  'names_differ (nothing switched on), or admin (an admin enabled/disabled the user first).';
insert into livesync.first_login (user_id) select id from xpert.users;

-- One-time messages shown by Xpert at start. At most one per (user, kind), ever.
create table livesync.notices (
  id bigint generated always as identity primary key,
  user_id bigint not null references xpert.users(id) on delete cascade,
  kind text not null,
  message text not null,
  created_at timestamptz not null default now(),
  shown_at timestamptz,
  unique (user_id, kind)
);

-- Every queued change takes a number from this sequence (queue.version), so a later change
-- of the same (user, appointment) always carries a larger version; a transaction's first
-- change also takes one, as the key of the advisory lock it holds to its end.
create sequence livesync.change_version;

-- The change log. Each row means "the calendar entry of (user_id, appointment_id) may be out
-- of date" (a participant row changed), or with user_id NULL "every participant's entry of
-- appointment_id may be" (the appointment itself changed). It carries no intent: workers
-- read it from the truth when they expand the log into the queue, so the order of rows
-- does not matter. No index, no key, no foreign key: Xpert's transactions write it.
create table livesync.changes (
  appointment_id bigint not null,
  user_id bigint,
  changed_at timestamptz not null default now()
) with (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
comment on table livesync.changes is
  'Append-only change log written by the triggers on Xpert''s tables; no index on purpose. '
  'livesync.expand_changes moves it into livesync.queue.';

-- The per-user queue: at most one entry per (user, appointment), holding the final intent.
-- Workers read a user's entries through the primary key's user_id prefix.
create table livesync.queue (
  user_id bigint not null,
  appointment_id bigint not null,
  op text not null check (op in ('upsert', 'delete')),
  version bigint not null default nextval('livesync.change_version'),
  queued_at timestamptz not null default now(),   -- when this entry first appeared
  changed_at timestamptz not null default now(),  -- when its intent last changed
  attempts integer not null default 0,
  not_before timestamptz not null default '-infinity',  -- back-off after a failure
  last_error text,
  primary key (user_id, appointment_id)
) with (fillfactor = 80);

-- What each user's calendar holds, written only by workers. sequence -1 marks "maybe
-- delivered": a write whose outcome is unknown (see the worker's claim module).
create table livesync.delivered (
  user_id bigint not null,
  appointment_id bigint not null,
  uid text not null,                 -- the iCalendar UID, stable per appointment
  version bigint not null,           -- the queue version that was delivered last
  sequence integer not null default 0,  -- iCalendar SEQUENCE, bumped on every update
  remote_id text,                    -- href (CalDAV) or event id (Graph)
  etag text,
  delivered_at timestamptz not null default now(),
  row_version text,                  -- the appointment row delivered (xmin/ctid)
  primary key (user_id, appointment_id)
) with (fillfactor = 85);

-- Entries that failed too often. Nothing is dropped silently: they wait here with their
-- last error until an admin re-queues or drops them (livesync-admin dead-letters).
create table livesync.dead_letters (
  id bigint generated always as identity primary key,
  user_id bigint not null,
  appointment_id bigint not null,
  op text not null,
  version bigint not null,
  attempts integer not null,
  last_error text not null,
  first_queued_at timestamptz not null,
  failed_at timestamptz not null default now()
);
create index dead_letters_user on livesync.dead_letters (user_id);

-- Per-user presence (the latest login) and the delivery lease. Written by the login
-- trigger and by workers, never by the appointment triggers.
create table livesync.user_state (
  user_id bigint primary key,
  login_id bigint,                   -- latest login
  logged_in_at timestamptz,
  logged_out_at timestamptz,
  login_matched boolean,             -- did that login's Windows name match?
  flush_requested_at timestamptz,    -- a matching login whose queue was not yet drained
  lease_owner text,
  lease_token uuid,
  lease_expires_at timestamptz,
  last_synced_at timestamptz,
  last_error text,
  lease_key integer
) with (fillfactor = 70);
comment on column livesync.user_state.lease_key is
  'The presence lock key of the worker holding the lease: once that lock is free, the lease is over.';
-- Workers lease the least recently synced users first.
create index user_state_claim_order on livesync.user_state (last_synced_at nulls first, user_id);

-- Every login, recorded in Xpert's own transaction (a durable flush request): a login that
-- happens while no worker runs is served when one starts.
create table livesync.login_events (
  login_id bigint primary key,
  user_id bigint not null,
  windows_username text not null,
  matched boolean not null,
  logged_in_at timestamptz not null,
  recorded_at timestamptz not null default now(),
  processed_at timestamptz
);
create index login_events_unprocessed on livesync.login_events (login_id)
  where processed_at is null;

-- Running workers. A worker says it is awake while it watches for work by itself, asleep
-- while it waits for a NOTIFY; it holds the presence lock (27764, lock_key) while it lives.
create table livesync.workers (
  id uuid primary key,
  host text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  awake boolean not null default true,
  lock_key integer
);
comment on column livesync.workers.lock_key is
  'The presence lock (27764, lock_key) this worker holds while its session lives; NULL in poll-only mode.';

-- Keys of the workers' presence locks.
create sequence livesync.worker_lock_key as integer minvalue 1 cycle;
comment on sequence livesync.worker_lock_key is
  'Keys of the presence locks (27764, key) that live workers hold on their listening connection.';

-- Until when (seconds since the epoch) a worker sleeps and LISTENs while none is awake;
-- 0 or in the past: nobody to wake. A sequence, because the triggers read it with a
-- function call instead of a query; written whenever livesync.workers changes.
create sequence livesync.wake_until minvalue 0 start 0;
comment on sequence livesync.wake_until is
  'Seconds since the epoch until which a live worker sleeps and none is awake (the heartbeat '
  'of the sleeping workers + 30 s); maintained by the trigger on livesync.workers, read by '
  'livesync.wake and the appointment insert trigger to decide whether to NOTIFY.';
