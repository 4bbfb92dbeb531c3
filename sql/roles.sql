-- Least-privilege roles for livesync. Run once per database, as the owner of the Xpert
-- tables (the role that runs `livesync-admin migrate`), after migrating:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
-- Then create the login roles and put them in these groups, e.g.
--   create role lsworker login password '…' in role livesync_worker;
--   create role lsadmin  login password '…' in role livesync_admin;
--   grant livesync_xpert_app to <Xpert's application role>;   -- lets Xpert read user_status
--
-- livesync_worker  reads Xpert's tables, writes only livesync's delivery tables.
-- livesync_admin   what livesync-admin needs: the worker's rights plus settings and
--                  per-user settings. Neither can modify xpert.*.
-- livesync_xpert_app  what Xpert's UI needs: read livesync.user_status, call
--                  livesync.notice_shown. (The triggers run with their owner's rights.)
-- Migrations stay with the owner: they create triggers on Xpert's tables.
-- Re-running this file is safe.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'livesync_worker') then
    create role livesync_worker nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'livesync_admin') then
    create role livesync_admin nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'livesync_xpert_app') then
    create role livesync_xpert_app nologin;
  end if;
end $$;

-- Xpert's tables: read only.
grant usage on schema xpert to livesync_worker, livesync_admin;
grant select on xpert.users, xpert.appointments, xpert.appointment_participants, xpert.logins
  to livesync_worker, livesync_admin;

-- livesync's tables.
grant usage on schema livesync to livesync_worker, livesync_admin, livesync_xpert_app;
grant select on all tables in schema livesync to livesync_worker, livesync_admin;
grant insert, update, delete on
  livesync.changes, livesync.queue, livesync.delivered, livesync.dead_letters, livesync.user_state,
  livesync.login_events, livesync.workers, livesync.first_login, livesync.notices
  to livesync_worker, livesync_admin;
-- The first-login rule switches a user on (worker); admins manage every user's settings.
grant insert, update on livesync.user_settings to livesync_worker;
grant insert, update, delete on livesync.user_settings to livesync_admin;
grant update on livesync.settings to livesync_admin;
-- The console and the feeds (a worker serves them): sessions, the sign-in limit, the cookie
-- signing key made at the first start, and the console's actions on feed secrets. Console
-- accounts are managed by livesync-admin only; the worker reads their hashes to check a
-- sign-in and notes the time of it.
grant insert, update, delete on livesync.console_sessions, livesync.console_sign_in_failures,
  livesync.feed_secrets to livesync_worker, livesync_admin;
grant insert on livesync.console_key to livesync_worker, livesync_admin;
grant update (last_sign_in_at) on livesync.console_users to livesync_worker;
grant insert, update, delete on livesync.console_users to livesync_admin;
-- Verification: the record of each calendar's last verification and the scheduled passes,
-- written by the worker's passes and by `livesync-admin verify` (which runs the worker
-- binary with the admin's connection).
grant insert, update, delete on livesync.verifications to livesync_worker, livesync_admin;
grant update on livesync.verify_pass to livesync_worker, livesync_admin;
grant usage, select on all sequences in schema livesync to livesync_worker, livesync_admin;
grant execute on all functions in schema livesync to livesync_worker, livesync_admin;

-- Xpert's UI.
grant select on livesync.user_status to livesync_xpert_app;
grant execute on function livesync.notice_shown(bigint) to livesync_xpert_app;

-- Nobody else writes livesync's tables.
revoke all on all tables in schema livesync from public;
