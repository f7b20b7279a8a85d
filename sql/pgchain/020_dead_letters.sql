-- Events that left their partition's way: parked behind a missing dependency,
-- or dead. A row and the ledger's move past its offset commit together
-- (pgchain.dead_letter), so a redelivered offset is skipped by the ledger and
-- never dead-lettered twice. The row is also the outbox of the dead-letter
-- topic (published_at).
create table if not exists pgchain.dead_letters (
  id              bigserial   primary key,
  group_id        text        not null,
  -- null when no pipeline takes the message (unroutable)
  pipeline        text,
  topic           text        not null,
  partition       integer     not null,
  kafka_offset    bigint      not null,
  kafka_timestamp bigint,
  -- the original message, byte for byte (null stays null)
  msg_key         bytea,
  msg_value       bytea,
  header_names    text[]      not null default '{}',
  header_values   bytea[]     not null default '{}',
  -- the event's key: later events of this key in this pipeline park behind
  entity_key      jsonb,
  status          text        not null
                  check (status in ('parked', 'dead', 'replayed', 'discarded')),
  -- dependency: a step raised PGW01; queued: parked behind an earlier event
  -- of the same key; data: the chain failed on this event; undecodable and
  -- unroutable: the message never reached a chain
  error_class     text        not null
                  check (error_class in ('dependency', 'queued', 'data', 'undecodable', 'unroutable')),
  failing_step    text,
  sqlstate        text,
  error_message   text        not null,
  -- the key a parked event waits for (PGW01's DETAIL), e.g. member:42
  awaits          text,
  -- chain runs before the event left the partition
  attempts        integer     not null,
  -- replays tried since (recovery passes and `pgchain dlq replay`)
  replays         integer     not null default 0,
  first_failed_at timestamptz not null default now(),
  last_failed_at  timestamptz not null default now(),
  dlq_topic       text        not null,
  published_at    timestamptz,
  resolved_at     timestamptz,
  -- why it left the table's open set: 'replayed', 'replayed by recovery',
  -- or the reason given to `pgchain dlq discard`
  resolution      text,
  unique (group_id, topic, partition, kafka_offset)
);

create index if not exists dead_letters_parked_key
  on pgchain.dead_letters (group_id, pipeline, entity_key, id) where status = 'parked';
create index if not exists dead_letters_awaits
  on pgchain.dead_letters (awaits) where status = 'parked';
create index if not exists dead_letters_unpublished
  on pgchain.dead_letters (group_id, topic, partition) where published_at is null;
create index if not exists dead_letters_open
  on pgchain.dead_letters (group_id, status, pipeline) where status in ('parked', 'dead');
