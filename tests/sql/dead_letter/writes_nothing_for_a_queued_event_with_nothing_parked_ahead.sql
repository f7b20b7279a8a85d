-- A 'queued' event whose parked predecessor is no longer parked (replayed
-- meanwhile) is not written: o_id is null and the ledger does not move.
do $$
declare
  v_id        bigint := -1;
  v_published boolean;
begin
  insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 10);
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 9, '{"id": 1}', 'replayed', 'dependency', 'member 1 is missing', 1, 'dlq');

  call pgchain.dead_letter('g', 'p', 'topic', 0, 11, null, null, 'v'::bytea, null, null,
    '{"id": 1}', 'parked', 'queued', null, null, 'waits behind offset 9', null, 0, 'topic.dlq', v_id, v_published);
  assert v_id is null, format('expected a null id, found %s', v_id);
  assert v_published = false, format('expected published false, found %s', v_published);
  assert (select count(*) from pgchain.dead_letters where group_id = 'g' and topic = 'topic') = 1, 'expected no row written';
  assert pgchain.applied_position('g', 'topic', 0) = 10,
    format('expected the ledger to stay at 10, found %s', pgchain.applied_position('g', 'topic', 0));
end $$;
