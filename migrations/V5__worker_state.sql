-- livesync: what the worker needs beyond the foundation.

-- Every enabled user has a user_state row (presence, lease), also one who never logged in:
-- in push mode their calendar is served without a login.
insert into livesync.user_state (user_id)
select user_id from livesync.user_settings
on conflict (user_id) do nothing;

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

-- No further index on livesync.queue: every index is paid for by every queued change inside
-- Xpert's transactions. Workers read a user's entries through the primary key's user_id
-- prefix and sort the few they find by version.
