-- livesync: global configuration, per-user settings, the post-update first-login state and
-- one-time notices. Everything livesync owns lives in schema livesync; Xpert's tables in
-- schema xpert are only read, and get triggers (V3) that never fail an Xpert write for a
-- reason of livesync's own.

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
create trigger settings_check before insert or update on livesync.settings
  for each row execute function livesync.check_settings();

-- "Benutzereinstellung / Outlook Terminsynchronisation (tm)". A user without a row reads as
-- not enabled.
create table livesync.user_settings (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  live_sync_enabled boolean not null default false,  -- "Live-Synchronisation aktivieren"
  keep_logfile boolean not null default false,       -- "Logfile für Live Synchronisation führen"
  updated_at timestamptz not null default now()
);

-- The users that existed when livesync was installed ("existing users" of the update) and
-- what their first login after the update decided. Users created later have no row.
create table livesync.first_login (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  state text not null default 'pending'
    check (state in ('pending', 'enabled', 'names_differ')),
  login_id bigint,              -- the login that decided it
  decided_at timestamptz
);
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

-- Xpert calls this after showing the pending notice(s); returns how many were marked.
create function livesync.notice_shown(p_user_id bigint) returns integer
language sql as $$
  with marked as (
    update livesync.notices set shown_at = now()
    where user_id = p_user_id and shown_at is null
    returning 1)
  select count(*)::integer from marked
$$;
