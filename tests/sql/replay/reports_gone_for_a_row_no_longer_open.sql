-- A row already replayed or discarded (or no longer there) is 'gone': the
-- chain does not run and the row is left as it is.
create schema t;
create table t.calls (n int);
create procedure t.count(inout ev jsonb) language plpgsql as $$
begin
  insert into t.calls values (1);
end $$;

do $$
declare
  v_replayed  bigint;
  v_discarded bigint;
  v_status    text;
begin
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic, resolution)
  values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'replayed', 'dependency', 'member 1 is missing', 1, 'dlq', 'replayed')
  returning id into v_replayed;
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic, resolution)
  values ('g', 'p', 'topic', 0, 4, '{"id": 2}', 'discarded', 'data', 'bad value', 3, 'dlq', 'not needed')
  returning id into v_discarded;

  call pgchain.replay(v_replayed, array['t.count'], '{"key": {"id": 1}}', 'again', v_status);
  assert v_status = 'gone', format('replayed row: expected gone, found %s', v_status);
  call pgchain.replay(v_discarded, array['t.count'], '{"key": {"id": 2}}', 'again', v_status);
  assert v_status = 'gone', format('discarded row: expected gone, found %s', v_status);
  call pgchain.replay(-1, array['t.count'], '{"key": {"id": 3}}', 'again', v_status);
  assert v_status = 'gone', format('missing row: expected gone, found %s', v_status);

  assert not exists (select 1 from t.calls), 'expected the chain not to run';
  assert (select resolution from pgchain.dead_letters where id = v_replayed) = 'replayed',
    'expected the replayed row''s resolution kept';
  assert (select status = 'discarded' and resolution = 'not needed' from pgchain.dead_letters where id = v_discarded),
    'expected the discarded row kept as it was';
end $$;
