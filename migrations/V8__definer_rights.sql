-- livesync: the triggers on Xpert's tables, and the function Xpert calls, run with the
-- rights of their owner (the role that migrated), not of Xpert's application role. Xpert's
-- role then needs no privilege on schema livesync at all (sql/roles.sql grants it only
-- what it reads), and cannot write livesync's tables directly. The search path is pinned,
-- as every SECURITY DEFINER function must: all names inside are schema-qualified.
alter function livesync.on_participant_change() security definer set search_path = pg_catalog, pg_temp;
alter function livesync.on_appointment_update() security definer set search_path = pg_catalog, pg_temp;
alter function livesync.on_login_insert() security definer set search_path = pg_catalog, pg_temp;
alter function livesync.on_login_update() security definer set search_path = pg_catalog, pg_temp;
alter function livesync.on_user_delete() security definer set search_path = pg_catalog, pg_temp;
alter function livesync.notice_shown(bigint) security definer set search_path = pg_catalog, pg_temp;

revoke all on function livesync.on_participant_change() from public;
revoke all on function livesync.on_appointment_update() from public;
revoke all on function livesync.on_login_insert() from public;
revoke all on function livesync.on_login_update() from public;
revoke all on function livesync.on_user_delete() from public;
