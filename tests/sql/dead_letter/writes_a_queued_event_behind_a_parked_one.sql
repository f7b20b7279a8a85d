-- A 'queued' event whose key still has a parked event ahead is written as
-- parked and the ledger moves past it.
do $$
declare
  v_id        bigint;
  v_published boolean;
begin
  insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 10);
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, awaits, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 9, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq');

  call pgchain.dead_letter('g', 'p', 'topic', 0, 11, null, null, 'v'::bytea, null, null,
    '{"id": 1}', 'parked', 'queued', null, null, 'waits behind offset 9', null, 0, 'topic.dlq', v_id, v_published);
  assert v_id is not null, 'expected the queued event to be written';
  assert (select status = 'parked' and error_class = 'queued' and kafka_offset = 11
            from pgchain.dead_letters where id = v_id),
    'expected a parked row of class queued at offset 11';
  assert pgchain.applied_position('g', 'topic', 0) = 11,
    format('expected the ledger at 11, found %s', pgchain.applied_position('g', 'topic', 0));
end $$;
