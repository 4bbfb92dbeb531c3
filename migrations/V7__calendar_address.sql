-- livesync: where a person's calendar is, when the sink's template does not fit them
-- (a Microsoft 365 mailbox such as maria.muster@kanzlei.at, or a full CalDAV collection
-- URL). NULL: the sink's template with the Xpert user name.
alter table livesync.user_settings add column calendar_address text;

comment on column livesync.user_settings.calendar_address is
  'Override of the calendar location for this user (Graph mailbox or CalDAV URL); NULL = template.';
