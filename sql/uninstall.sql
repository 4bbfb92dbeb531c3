-- Removes everything livesync added to an Xpert database and nothing else.
-- Xpert's own tables and rows (schema xpert) are left untouched.
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/uninstall.sql
-- Stop every livesync-worker first. Calendars already written keep their entries.
begin;
-- The triggers on Xpert's tables depend on functions in schema livesync; dropping the
-- schema with cascade removes them as well (and the migration history kept there).
drop schema if exists livesync cascade;
commit;
