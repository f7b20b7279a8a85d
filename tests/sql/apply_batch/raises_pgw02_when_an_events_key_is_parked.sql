-- An event whose key has a parked event ahead of it (same group and pipeline)
-- raises PGW02, so that the caller runs the batch one event at a time.
create schema t;
create table t.seen (id int);
create procedure t.note(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen values ((ev->'key'->>'id')::int);
end $$;
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 4, '{"id": 7}', 'parked', 'dependency', 'member 7 is missing', 'member:7', 1, 'dlq');
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 4);

do $$
declare
  v_statuses text[];
  v_ms       float8[];
  v_counts   integer[];
  v_raised   boolean := false;
  v_message  text;
begin
  begin
    call pgchain.apply_batch('g', 'topic', 0, array[5, 6]::bigint[], array['p', 'p'],
      array['t.note', 't.note'], array['{"key": {"id": 1}}', '{"key": {"id": 7}}']::jsonb[],
      v_statuses, v_ms, v_counts);
  exception when sqlstate 'PGW02' then
    v_raised := true;
    get stacked diagnostics v_message = message_text;
  end;
  assert v_raised, format('expected PGW02, the batch returned statuses %s', v_statuses);
  assert v_message like '%offset 6%', format('expected the message to name offset 6, found %s', v_message);

  -- The same key in another pipeline is not held back.
  call pgchain.apply_batch('g', 'topic', 0, array[5, 6]::bigint[], array['p', 'q'],
    array['t.note', 't.note'], array['{"key": {"id": 1}}', '{"key": {"id": 7}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['applied', 'applied'], format('other pipeline: expected applied,applied; found %s', v_statuses);
end $$;
