-- Failure handling: the dead-letter table, parking behind a missing
-- dependency, replays, and pgchain.provide.
--
-- An event that cannot be applied leaves its partition's way: its row here
-- and the ledger's move past its offset commit together, so a redelivered
-- offset is skipped by the ledger and never dead-lettered twice. The row is
-- also the outbox of the dead-letter topic (published_at).

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

-- A step that makes a row others may wait for calls this with the awaited
-- key (the DETAIL its dependants raise with PGW01). At commit pgchain
-- re-drives the events parked on that key, in order.
create or replace function pgchain.provide(p_key text) returns void
language plpgsql as $$
begin
  if exists (select 1 from pgchain.dead_letters where awaits = p_key and status = 'parked') then
    perform pg_notify('pgchain_provide', p_key);
  end if;
end $$;

-- True (and the parked rows locked until commit) when an earlier event of
-- this key waits in the dead-letter table: the event must park behind it.
-- The lock orders this against a replay of those rows in flight.
create or replace function pgchain.parked_ahead(p_group text, p_pipeline text, p_key jsonb)
returns boolean language plpgsql as $$
begin
  if not exists (select 1 from pgchain.dead_letters
                  where group_id = p_group and pipeline = p_pipeline
                    and entity_key = p_key and status = 'parked') then
    return false;
  end if;
  perform 1 from pgchain.dead_letters
   where group_id = p_group and pipeline = p_pipeline
     and entity_key = p_key and status = 'parked'
     for update;
  return found;
end $$;

drop procedure if exists pgchain.apply_event(text, text, integer, bigint, text[], jsonb, text);
drop procedure if exists pgchain.apply_batch(text, text, integer, bigint[], text[], jsonb[], text[]);

-- Runs one event through its chain and records its offset, in the caller's
-- transaction. o_status: applied | filtered (a step set ev to null) | skipped
-- (the offset was already applied: a redelivery) | behind (an earlier event
-- of its key is parked; nothing ran and the ledger did not move).
-- o_step_ms[i]: how long step i took, for the steps that ran.
create or replace procedure pgchain.apply_event(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offset    bigint,
  p_pipeline  text,
  p_steps     text[],
  p_ev        jsonb,
  inout o_status text,
  inout o_step_ms float8[]
) language plpgsql as $$
declare
  v_ev   jsonb := p_ev;
  v_step text;
  v_pos  bigint;
  v_at   timestamptz;
begin
  o_step_ms := '{}';
  -- GUARD: an earlier event of this key is parked. Rare: read the ledger
  -- first so a redelivery is still skipped, not parked a second time.
  if pgchain.parked_ahead(p_group, p_pipeline, p_ev->'key') then
    select applied_through into v_pos from pgchain.offsets
     where group_id = p_group and topic = p_topic and partition = p_partition;
    if v_pos is not null and p_offset <= v_pos then
      o_status := 'skipped';
    else
      o_status := 'behind';
    end if;
    return;
  end if;
  -- GUARD: a redelivered offset at or below the ledger is skipped untouched.
  -- The update locks the ledger row, so two consumers of one partition
  -- (a rebalance overlap) serialise here and the second one skips.
  update pgchain.offsets
     set applied_through = p_offset, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < p_offset;
  if not found then
    insert into pgchain.offsets (group_id, topic, partition, applied_through)
    values (p_group, p_topic, p_partition, p_offset)
    on conflict do nothing;
    if not found then
      o_status := 'skipped';
      return;
    end if;
  end if;

  -- Each step is `schema.procedure(inout ev jsonb)`; its output feeds the next.
  foreach v_step in array p_steps loop
    v_at := clock_timestamp();
    execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
       into v_ev using v_ev;
    o_step_ms := o_step_ms || (extract(epoch from clock_timestamp() - v_at) * 1000)::float8;
    if v_ev is null or v_ev = 'null'::jsonb then
      o_status := 'filtered';
      return;
    end if;
  end loop;
  o_status := 'applied';
end $$;

-- Runs p_evs (offset order, one partition) through their chains in one
-- transaction. p_chains[i] is event i's chain as `schema.proc,schema.proc`.
-- o_statuses[i]: applied | filtered | skipped, as for pgchain.apply_event.
-- An event whose key is parked raises PGW02: the caller runs the batch one
-- event at a time instead. o_step_ms holds the time of every step that ran,
-- event after event; o_step_counts[i] says how many of them are event i's.
create or replace procedure pgchain.apply_batch(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offsets   bigint[],
  p_pipelines text[],
  p_chains    text[],
  p_evs       jsonb[],
  inout o_statuses text[],
  inout o_step_ms float8[],
  inout o_step_counts integer[]
) language plpgsql as $$
declare
  v_pos    bigint;
  v_ev     jsonb;
  v_step   text;
  v_status text;
  v_at     timestamptz;
  v_ran    integer;
begin
  o_statuses := '{}';
  o_step_ms := '{}';
  o_step_counts := '{}';
  -- GUARD: an empty batch touches nothing (not even the ledger).
  if coalesce(array_length(p_offsets, 1), 0) = 0 then
    return;
  end if;
  insert into pgchain.offsets (group_id, topic, partition, applied_through)
  values (p_group, p_topic, p_partition, -1)
  on conflict do nothing;
  -- The row lock serialises two consumers of one partition (a rebalance overlap).
  select applied_through into v_pos from pgchain.offsets
   where group_id = p_group and topic = p_topic and partition = p_partition
     for update;
  for i in 1 .. coalesce(array_length(p_offsets, 1), 0) loop
    -- GUARD: a redelivered offset at or below the ledger is skipped untouched.
    if p_offsets[i] <= v_pos then
      o_statuses := o_statuses || 'skipped'::text;
      o_step_counts := o_step_counts || 0;
      continue;
    end if;
    -- GUARD: an event parked behind its key is handled one at a time.
    if pgchain.parked_ahead(p_group, p_pipelines[i], p_evs[i]->'key') then
      raise exception 'offset % of %/% waits behind a parked event of its key', p_offsets[i], p_topic, p_partition
        using errcode = 'PGW02';
    end if;
    v_ev := p_evs[i];
    v_status := 'applied';
    v_ran := 0;
    foreach v_step in array string_to_array(p_chains[i], ',') loop
      v_at := clock_timestamp();
      execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
         into v_ev using v_ev;
      o_step_ms := o_step_ms || (extract(epoch from clock_timestamp() - v_at) * 1000)::float8;
      v_ran := v_ran + 1;
      if v_ev is null or v_ev = 'null'::jsonb then
        v_status := 'filtered';
        exit;
      end if;
    end loop;
    o_statuses := o_statuses || v_status;
    o_step_counts := o_step_counts || v_ran;
    v_pos := p_offsets[i];
  end loop;
  update pgchain.offsets set applied_through = v_pos, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < v_pos;
end $$;

-- Records an event that leaves its partition's way (parked or dead) and
-- moves the ledger past it, in one transaction. A redelivered offset returns
-- the row written before. For a queued event (p_class = 'queued') whose
-- parked predecessors were replayed meanwhile, nothing is written and o_id
-- is null: the caller runs the event instead.
create or replace procedure pgchain.dead_letter(
  p_group         text,
  p_pipeline      text,
  p_topic         text,
  p_partition     integer,
  p_offset        bigint,
  p_timestamp     bigint,
  p_key           bytea,
  p_value         bytea,
  p_header_names  text[],
  p_header_values bytea[],
  p_entity_key    jsonb,
  p_status        text,
  p_class         text,
  p_step          text,
  p_sqlstate      text,
  p_message       text,
  p_awaits        text,
  p_attempts      integer,
  p_dlq_topic     text,
  inout o_id        bigint,
  inout o_published boolean
) language plpgsql as $$
begin
  select id, published_at is not null into o_id, o_published from pgchain.dead_letters
   where group_id = p_group and topic = p_topic and partition = p_partition
     and kafka_offset = p_offset;
  if found then
    return;
  end if;
  -- GUARD: a queued event needs a parked event ahead of it, still parked.
  if p_class = 'queued' and not pgchain.parked_ahead(p_group, p_pipeline, p_entity_key) then
    o_id := null;
    o_published := false;
    return;
  end if;
  insert into pgchain.dead_letters (
    group_id, pipeline, topic, partition, kafka_offset, kafka_timestamp,
    msg_key, msg_value, header_names, header_values, entity_key, status,
    error_class, failing_step, sqlstate, error_message, awaits, attempts, dlq_topic)
  values (
    p_group, p_pipeline, p_topic, p_partition, p_offset, p_timestamp,
    p_key, p_value, coalesce(p_header_names, '{}'), coalesce(p_header_values, '{}'),
    p_entity_key, p_status, p_class, p_step, p_sqlstate, p_message, p_awaits,
    p_attempts, p_dlq_topic)
  returning id into o_id;
  o_published := false;
  insert into pgchain.offsets (group_id, topic, partition, applied_through)
  values (p_group, p_topic, p_partition, p_offset)
  on conflict (group_id, topic, partition) do update
     set applied_through = greatest(pgchain.offsets.applied_through, excluded.applied_through),
         updated_at = now();
end $$;

-- Replays dead-letter p_id through its chain. The row is the ledger of a
-- replay: it is locked, must still be parked or dead, and becomes replayed in
-- the same transaction as the chain. o_status: applied | filtered | gone
-- (replayed or discarded meanwhile) | behind (an earlier event of its key is
-- still parked; replay that first).
create or replace procedure pgchain.replay(
  p_id         bigint,
  p_steps      text[],
  p_ev         jsonb,
  p_resolution text,
  inout o_status text
) language plpgsql as $$
declare
  v_row  pgchain.dead_letters;
  v_ev   jsonb := p_ev;
  v_step text;
begin
  select * into v_row from pgchain.dead_letters where id = p_id for update;
  if not found or v_row.status not in ('parked', 'dead') then
    o_status := 'gone';
    return;
  end if;
  if v_row.entity_key is not null and exists (
       select 1 from pgchain.dead_letters
        where group_id = v_row.group_id and pipeline = v_row.pipeline
          and entity_key = v_row.entity_key and status = 'parked' and id < p_id) then
    o_status := 'behind';
    return;
  end if;
  o_status := 'applied';
  foreach v_step in array p_steps loop
    execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
       into v_ev using v_ev;
    if v_ev is null or v_ev = 'null'::jsonb then
      o_status := 'filtered';
      exit;
    end if;
  end loop;
  update pgchain.dead_letters
     set status = 'replayed', resolved_at = now(), resolution = p_resolution
   where id = p_id;
end $$;
