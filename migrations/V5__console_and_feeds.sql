-- The admin console in the browser and the calendar feeds. Nothing here is read or
-- written by Xpert or by the triggers on its tables; only the worker that serves the
-- console and the feeds, and livesync-admin (`console-user`, `feed`), use these tables.
--   console_users              who may sign in to the console, with an Argon2id hash
--   console_key                the key that signs the console's cookies (one row)
--   console_sessions           signed-in browsers, ended after idle hours or on sign-out
--   console_sign_in_failures   failed sign-ins per client address, for the sign-in limit
--   feed_secrets               the secret in each person's calendar feed URL

-- Console accounts (`livesync-admin console-user add NAME --password-stdin`). The hash is
-- a PHC string (`$argon2id$v=19$m=…`): the password itself is never stored.
create table livesync.console_users (
  id bigint generated always as identity primary key,
  name text not null unique check (name <> '' and length(name) <= 64),
  password_hash text not null check (password_hash like '$argon2%'),
  created_at timestamptz not null default now(),
  last_sign_in_at timestamptz
);

-- The key the console signs its cookies with (64 bytes; HMAC-SHA256). The first worker
-- that serves the console creates it, so nothing has to be configured; every worker
-- serving the console uses the same one, and sessions survive restarts. Deleting the row
-- (a new key is made at the next start) ends every session.
create table livesync.console_key (
  id boolean primary key default true check (id),
  signing_key bytea not null check (length(signing_key) = 64),
  created_at timestamptz not null default now()
);

-- Signed-in browsers. The cookie carries the session's token; this table holds only the
-- token's SHA-256, so that whoever reads the table cannot sign in with it. A session ends
-- when it has been idle longer than LIVESYNC_CONSOLE_SESSION_HOURS, on sign-out, and when
-- its console user is removed. console_user_id is NULL for a name a trusted reverse proxy
-- vouched for (LIVESYNC_CONSOLE_PROXY_USER_HEADER). csrf_token is the token every form of
-- the session carries.
create table livesync.console_sessions (
  token_sha256 bytea primary key check (length(token_sha256) = 32),
  console_user_id bigint references livesync.console_users(id) on delete cascade,
  name text not null,
  csrf_token text not null,
  created_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now()
);
-- Expired sessions are removed by age.
create index console_sessions_last_seen on livesync.console_sessions (last_seen_at);

-- One row per failed sign-in: from the 10th within 15 minutes on, an address is answered
-- 429 until its oldest failure in the window is 15 minutes old. Rows older than the window
-- are removed whenever a failure is recorded.
create table livesync.console_sign_in_failures (
  address inet not null,
  failed_at timestamptz not null default now()
);
create index console_sign_in_failures_address
  on livesync.console_sign_in_failures (address, failed_at);
create index console_sign_in_failures_age on livesync.console_sign_in_failures (failed_at);

-- The secret of each person's calendar feed, https://host/feeds/<secret>.ics
-- (`livesync-admin feed url|rotate NAME`, or the console). The secret is kept so that its
-- URL can be shown again; a request is looked up by the secret's SHA-256 and then compared
-- in constant time. Rotating replaces the row: the old URL answers 404 from then on.
create table livesync.feed_secrets (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  secret text not null check (length(secret) >= 43),
  secret_sha256 bytea not null unique check (length(secret_sha256) = 32),
  created_at timestamptz not null default now()
);
