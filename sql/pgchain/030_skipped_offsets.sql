-- Offsets of a partition that pgchain moved past without applying them, and
-- why: retention deleted them before they were applied (kafka.on_gap: skip).
-- One row per gap; from_offset..to_offset inclusive.
create table if not exists pgchain.skipped_offsets (
  id          bigint generated always as identity primary key,
  group_id    text        not null,
  topic       text        not null,
  partition   integer     not null,
  from_offset bigint      not null,
  to_offset   bigint      not null,
  reason      text        not null,
  skipped_at  timestamptz not null default now(),
  check (from_offset <= to_offset)
);
create index if not exists skipped_offsets_partition
  on pgchain.skipped_offsets (group_id, topic, partition, from_offset);
