-- livesync: two corrections.
-- 1. The one-time notice "Die Outlook Live-Synchronisation wurde für Sie aktiviert." is shown
--    only while live sync is on and licensed (the sync tab is visible); a notice created
--    while the firm has it switched off waits until it is switched on.
-- 2. Deleting an Xpert user also removes their dead letters.
create or replace view livesync.user_status as
select
  u.id as user_id,
  u.username,
  (s.live_sync_enabled and s.cti_sync_licensed) as show_sync_tab,
  coalesce(us.live_sync_enabled, false) as live_sync_enabled,
  coalesce(us.keep_logfile, false) as keep_logfile,
  (s.live_sync_enabled and s.cti_sync_licensed and coalesce(us.live_sync_enabled, false)
     and coalesce(st.login_matched = false, false)) as warn_inactive,
  case when s.live_sync_enabled and s.cti_sync_licensed then
    (select n.message from livesync.notices n
      where n.user_id = u.id and n.shown_at is null
      order by n.id limit 1)
  end as pending_notice,
  (select count(*) from livesync.queue q where q.user_id = u.id) as queued,
  st.last_synced_at
from xpert.users u
cross join livesync.settings s
left join livesync.user_settings us on us.user_id = u.id
left join livesync.user_state st on st.user_id = u.id;

create or replace function livesync.on_user_delete() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  delete from livesync.queue where user_id = old.id;
  delete from livesync.delivered where user_id = old.id;
  delete from livesync.dead_letters where user_id = old.id;
  delete from livesync.user_state where user_id = old.id;
  delete from livesync.login_events where user_id = old.id;
  return null;
end $$;
