-- A redelivered offset of a key that is parked is 'skipped', not 'behind':
-- it was already dealt with (parked), and must not be parked a second time.
create schema t;
create table t.calls (n int);
create procedure t.count(inout ev jsonb) language plpgsql as $$
begin
  insert into t.calls values (1);
end $$;
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 12);
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 12, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq');

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 0, 12, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'skipped', format('the parked offset itself: expected skipped, found %s', v_status);
  call pgchain.apply_event('g', 'topic', 0, 11, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'skipped', format('an older offset of the key: expected skipped, found %s', v_status);
  assert not exists (select 1 from t.calls), 'expected no step to run';
  assert pgchain.applied_position('g', 'topic', 0) = 12, 'expected the ledger to stay at 12';
  assert (select count(*) from pgchain.dead_letters where group_id = 'g' and topic = 'topic') = 1, 'expected no new dead-letter row';
end $$;
