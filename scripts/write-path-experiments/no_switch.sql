-- Experiment for scripts/write-path-instructions.sh: V14 without the global-switch check in
-- the appointment trigger's log insert (changes then get logged while switched off).

create or replace function livesync.on_appointment_insert() returns trigger
language plpgsql security definer as $$
begin
  insert into livesync.changes (appointment_id, user_id) values (new.id, null);
  perform pg_catalog.pg_advisory_xact_lock(27763,
    (pg_catalog.nextval('livesync.change_version'::pg_catalog.regclass)
       operator(pg_catalog.%) 2147483648)::pg_catalog.int4);
  if pg_catalog.pg_sequence_last_value('livesync.wake_until'::pg_catalog.regclass)
       operator(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) then
    perform pg_catalog.pg_notify('livesync_wake', pg_catalog.concat('appointment:', new.id));
  end if;
  perform pg_catalog.set_config('livesync.new_appointment', new.id::pg_catalog.text, true);
  return null;
end $$;
