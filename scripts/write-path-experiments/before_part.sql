-- Experiment for scripts/write-path-instructions.sh: V14 with the participant insert trigger
-- BEFORE instead of AFTER (only its skip path is measured).

create function livesync.exp_participant_before() returns trigger
language plpgsql security definer as $$
begin
  if pg_catalog.current_setting('livesync.new_appointment', true)
       operator(pg_catalog.=) new.appointment_id::pg_catalog.text then
    return new;
  end if;
  insert into livesync.changes (appointment_id, user_id) values (new.appointment_id, new.user_id);
  return new;
end $$;
drop trigger livesync_queue_participants on xpert.appointment_participants;
create trigger livesync_queue_participants_ins before insert on xpert.appointment_participants
  for each row execute function livesync.exp_participant_before();
create trigger livesync_queue_participants after update or delete on xpert.appointment_participants
  for each row execute function livesync.on_participant_change();
