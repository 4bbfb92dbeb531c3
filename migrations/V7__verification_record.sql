-- The record of verification: when each person's calendar was last compared with Xpert
-- and what was found, and the workers' scheduled passes over everyone. Nothing here is
-- read or written by Xpert or by the triggers on its tables; the worker (its scheduled
-- passes, `livesync-worker verify` that `livesync-admin verify` runs) writes it, the
-- console and /metrics read it.
--   verifications   per person: the last verification of their calendar, its counts
--   verify_pass     the scheduled passes (one row): how many, the last one's start and end

-- Per person, the last verification of their calendar, whoever ran it: a scheduled pass
-- (verified_by 'schedule', with the pass's number) or an admin (`livesync-admin verify`,
-- whatever window was asked). The items_* columns count the calendar's items by what the
-- comparison found (ok, missing, orphan, drifted, duplicate, foreign); error says why the
-- calendar could not be read (then every count is 0). queued: the repair's queue entries.
create table livesync.verifications (
  user_id bigint primary key references xpert.users(id) on delete cascade,
  verified_at timestamptz not null default now(),
  verified_by text not null check (verified_by in ('schedule', 'admin')),
  pass bigint check ((verified_by = 'schedule') = (pass is not null)),
  error text,
  items_ok integer not null default 0 check (items_ok >= 0),
  items_missing integer not null default 0 check (items_missing >= 0),
  items_orphan integer not null default 0 check (items_orphan >= 0),
  items_drifted integer not null default 0 check (items_drifted >= 0),
  items_duplicate integer not null default 0 check (items_duplicate >= 0),
  items_foreign integer not null default 0 check (items_foreign >= 0),
  queued integer not null default 0 check (queued >= 0)
);

-- The workers' scheduled verification (LIVESYNC_VERIFY_EVERY): one row. A worker claims
-- the next pass by raising `passes` on the condition that it still holds the count the
-- worker read, so that of several workers exactly one runs each pass. finished_at: the
-- last pass that went through everyone; succeeded_at: the last that could also read every
-- calendar (livesync_verify_last_success_timestamp_seconds).
create table livesync.verify_pass (
  id boolean primary key default true check (id),
  passes bigint not null default 0 check (passes >= 0),
  started_at timestamptz,
  started_by uuid,              -- the worker (livesync.workers.id) that runs or ran it
  finished_at timestamptz,
  succeeded_at timestamptz
);
insert into livesync.verify_pass default values;
