-- livesync: the login-name rule, the per-user queue, what each calendar holds, dead letters,
-- presence and leases, and the worker registry used for wake-ups.

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

-- Every queued change takes a number from this sequence. Numbers only grow, so a later
-- change to the same (user, appointment) always carries a larger version. A worker that is
-- awake watches last_value to notice new work without any notification (see V3, wake).
create sequence livesync.change_version;

-- The per-user queue: at most one entry per (user, appointment), holding the final intent.
-- No foreign keys on purpose: the trigger that fills it runs inside Xpert's transactions and
-- must not take row locks on Xpert's tables.
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

-- What each user's calendar holds (written only by workers, after a successful delivery).
create table livesync.delivered (
  user_id bigint not null,
  appointment_id bigint not null,
  uid text not null,                 -- the iCalendar UID, stable per appointment
  version bigint not null,           -- the queue version that was delivered last
  sequence integer not null default 0,  -- iCalendar SEQUENCE, bumped on every update
  remote_id text,                    -- href (CalDAV) or event id (Graph)
  etag text,
  delivered_at timestamptz not null default now(),
  primary key (user_id, appointment_id)
);

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
-- trigger and by workers; never by the appointment triggers, so Xpert's appointment
-- writes never wait on it.
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
  last_error text
) with (fillfactor = 70);

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

-- Running workers. A worker marks itself awake while it is working or watching for work
-- and asleep while it waits for a notification (see livesync.wake in V3).
create table livesync.workers (
  id uuid primary key,
  host text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  awake boolean not null default true
);
