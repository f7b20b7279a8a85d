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
