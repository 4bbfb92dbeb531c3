-- livesync: an admin's explicit decision ends the post-update first-login rule for a user.
--
-- `livesync-admin user enable|disable` on an existing user whose first login after the
-- update has not happened yet records state 'admin', so that their first login can no
-- longer switch them on (or notify them) against what the admin decided.
alter table livesync.first_login drop constraint first_login_state_check;
alter table livesync.first_login add constraint first_login_state_check
  check (state in ('pending', 'enabled', 'names_differ', 'admin'));

comment on column livesync.first_login.state is
  'pending until the first login after the update decides: enabled (names matched), '
  'names_differ (nothing switched on), or admin (an admin enabled/disabled the user first).';
