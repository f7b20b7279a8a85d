-- The ledger: how far each (consumer group, topic, partition) has been applied.
-- applied_through is the highest offset applied in partition order.
-- applied_above is kept for key-ordered lanes: offsets above applied_through
-- that are already applied while an earlier offset is still in flight.
create table if not exists pgchain.offsets (
  group_id        text        not null,
  topic           text        not null,
  partition       integer     not null,
  applied_through bigint      not null,
  applied_above   bigint[]    not null default '{}',
  updated_at      timestamptz not null default now(),
  primary key (group_id, topic, partition)
);
