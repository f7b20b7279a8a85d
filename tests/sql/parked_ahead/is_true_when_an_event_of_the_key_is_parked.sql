-- parked_ahead is true when the group's pipeline has a parked row for the
-- key, whatever topic or partition the row came from.
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic-a', 2, 3, '{"id": 1, "site": "kr"}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq');

do $$
begin
  assert pgchain.parked_ahead('g', 'p', '{"id": 1, "site": "kr"}'),
    'expected true for the parked key';
  assert pgchain.parked_ahead('g', 'p', '{"site": "kr", "id": 1}'),
    'expected true for the same key written with its fields in another order';
end $$;
