-- Experiment for scripts/write-path-instructions.sh: before_part.sql, and the appointment
-- insert trigger BEFORE too.

\ir before_part.sql
create function livesync.exp_appointment_before() returns trigger
language plpgsql security definer as $$
begin
  insert into livesync.changes (appointment_id, user_id)
  select new.id, null from livesync.settings s where s.live_sync_enabled and s.cti_sync_licensed;
  if found then
    perform pg_catalog.pg_advisory_xact_lock(27763,
      (pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass)
         operator(pg_catalog.%) 2147483648)::pg_catalog.int4);
    if pg_catalog.pg_sequence_last_value('livesync.wake_until'::pg_catalog.regclass)
         operator(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) then
      perform pg_catalog.pg_notify('livesync_wake', pg_catalog.concat('appointment:', new.id));
    end if;
    perform pg_catalog.set_config('livesync.new_appointment', new.id::pg_catalog.text, true);
  end if;
  return new;
end $$;
drop trigger livesync_log_new_appointments on xpert.appointments;
create trigger livesync_log_new_appointments before insert on xpert.appointments
  for each row execute function livesync.exp_appointment_before();
