-- When an earlier event of the same key in the same pipeline is parked, the
-- event is 'behind': no step runs and the ledger does not move.
create schema t;
create table t.calls (n int);
create procedure t.count(inout ev jsonb) language plpgsql as $$
begin
  insert into t.calls values (1);
end $$;
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 3);
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq');

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 0, 8, 'p', array['t.count'],
    '{"key": {"id": 1}, "after": {"x": 1}}', v_status, v_ms);
  assert v_status = 'behind', format('expected behind, found %s', v_status);
  assert v_ms = '{}'::float8[], format('expected no timings, found %s', v_ms);
  assert not exists (select 1 from t.calls), 'expected no step to run for an event behind a parked one';
  assert pgchain.applied_position('g', 'topic', 0) = 3,
    format('expected the ledger to stay at 3, found %s', pgchain.applied_position('g', 'topic', 0));

  -- Behind also when the partition has no ledger row yet (the parked event came from another topic).
  call pgchain.apply_event('g', 'other', 2, 8, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'behind', format('no ledger row: expected behind, found %s', v_status);
  assert pgchain.applied_position('g', 'other', 2) is null, 'expected no ledger row to be created';

  -- Another key of the same pipeline is not held back.
  call pgchain.apply_event('g', 'topic', 0, 9, 'p', array['t.count'], '{"key": {"id": 2}}', v_status, v_ms);
  assert v_status = 'applied', format('other key: expected applied, found %s', v_status);
end $$;
