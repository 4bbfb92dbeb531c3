-- livesync.user_status: the one thing Xpert's UI reads, one row per Xpert user.
create view livesync.user_status as
select
  u.id as user_id,
  u.username,
  (s.live_sync_enabled and s.cti_sync_licensed) as show_sync_tab,
  coalesce(us.live_sync_enabled, false) as live_sync_enabled,
  coalesce(us.keep_logfile, false) as keep_logfile,
  -- Only a user who has live sync on but whose latest login's Windows name does not match
  -- is warned; a user who does not sync (no matching names, never enabled) is not.
  (s.live_sync_enabled and s.cti_sync_licensed and coalesce(us.live_sync_enabled, false)
     and coalesce(st.login_matched = false, false)) as warn_inactive,
  (select n.message from livesync.notices n
    where n.user_id = u.id and n.shown_at is null
    order by n.id limit 1) as pending_notice,
  (select count(*) from livesync.queue q where q.user_id = u.id) as queued,
  st.last_synced_at
from xpert.users u
cross join livesync.settings s
left join livesync.user_settings us on us.user_id = u.id
left join livesync.user_state st on st.user_id = u.id;

comment on view livesync.user_status is
  'One row per Xpert user: what Xpert shows (sync tab, warnings, one-time notice, queue).';
