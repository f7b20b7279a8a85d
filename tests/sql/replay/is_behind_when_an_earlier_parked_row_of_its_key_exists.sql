-- A row whose key has an earlier row still parked in its group and pipeline
-- is 'behind': the chain does not run and the row stays open.
create schema t;
create table t.calls (n int);
create procedure t.count(inout ev jsonb) language plpgsql as $$
begin
  insert into t.calls values (1);
end $$;

do $$
declare
  v_first  bigint;
  v_second bigint;
  v_status text;
begin
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, awaits, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq')
  returning id into v_first;
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 5, '{"id": 1}', 'parked', 'queued', 'waits behind offset 3', 0, 'dlq')
  returning id into v_second;

  call pgchain.replay(v_second, array['t.count'], '{"key": {"id": 1}}', 'replayed', v_status);
  assert v_status = 'behind', format('later row: expected behind, found %s', v_status);
  assert not exists (select 1 from t.calls), 'expected the chain not to run for a row behind';
  assert (select status from pgchain.dead_letters where id = v_second) = 'parked',
    'expected the row behind to stay parked';

  -- The earliest row goes first, then the one behind it.
  call pgchain.replay(v_first, array['t.count'], '{"key": {"id": 1}}', 'replayed', v_status);
  assert v_status = 'applied', format('earliest row: expected applied, found %s', v_status);
  call pgchain.replay(v_second, array['t.count'], '{"key": {"id": 1}}', 'replayed', v_status);
  assert v_status = 'applied', format('row behind, after the first: expected applied, found %s', v_status);

  -- A parked row of the same key in another pipeline does not hold a row back.
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic)
  values ('g', 'other', 'topic', 0, 6, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 1, 'dlq');
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 7, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 1, 'dlq')
  returning id into v_first;
  call pgchain.replay(v_first, array['t.count'], '{"key": {"id": 1}}', 'replayed', v_status);
  assert v_status = 'applied', format('other pipeline parked: expected applied, found %s', v_status);
end $$;
