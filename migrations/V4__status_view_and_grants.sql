-- What Xpert's UI reads, and who may call what.

-- One row per Xpert user: what Xpert shows (sync tab, warnings, one-time notice, queue).
-- The settings are one row (a LIMIT 1 subquery tells the planner so); "queued" is
-- livesync.pending_changes, a call per row: the view's plan and cost do not depend on the
-- statistics of livesync's tables.
create view livesync.user_status as
select
  u.id as user_id,
  u.username,
  cfg.active as show_sync_tab,
  coalesce(us.live_sync_enabled, false) as live_sync_enabled,
  coalesce(us.keep_logfile, false) as keep_logfile,
  (cfg.active and coalesce(us.live_sync_enabled, false)
     and coalesce(st.login_matched = false, false)) as warn_inactive,
  case when cfg.active then
    (select n.message from livesync.notices n
      where n.user_id = u.id and n.shown_at is null
      order by n.id limit 1)
  end as pending_notice,
  livesync.pending_changes(u.id) as queued,
  st.last_synced_at
from xpert.users u
cross join (select s.live_sync_enabled and s.cti_sync_licensed as active
              from livesync.settings s limit 1) cfg
left join livesync.user_settings us on us.user_id = u.id
left join livesync.user_state st on st.user_id = u.id;
comment on view livesync.user_status is
  'One row per Xpert user: what Xpert shows (sync tab, warnings, one-time notice, queue).';

-- The trigger functions are called by their triggers only, and the ones with their
-- owner's rights are not for anyone to call. (Roles for the worker, the admin and Xpert's
-- application: sql/roles.sql.)
revoke all on function livesync.on_appointment_insert() from public;
revoke all on function livesync.on_appointment_update() from public;
revoke all on function livesync.on_participant_change() from public;
revoke all on function livesync.on_login_insert() from public;
revoke all on function livesync.on_login_update() from public;
revoke all on function livesync.on_user_delete() from public;
revoke all on function livesync.recompute_wake_until() from public;
