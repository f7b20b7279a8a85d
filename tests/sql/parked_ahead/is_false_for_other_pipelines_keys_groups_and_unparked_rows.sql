-- Only a parked row of the same group, pipeline and key counts: another
-- pipeline, key or group, a dead or resolved row, or a null key do not.
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 1, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 1, 'dlq'),
       ('g', 'p', 'topic', 0, 2, '{"id": 2}', 'dead', 'data', 'bad value', 3, 'dlq'),
       ('g', 'p', 'topic', 0, 3, '{"id": 3}', 'replayed', 'dependency', 'member 3 is missing', 1, 'dlq'),
       ('g', 'p', 'topic', 0, 4, '{"id": 4}', 'discarded', 'dependency', 'member 4 is missing', 1, 'dlq'),
       ('g', null, 'topic', 0, 5, null, 'parked', 'unroutable', 'no pipeline', 0, 'dlq');

do $$
begin
  assert pgchain.parked_ahead('g', 'p', '{"id": 1}'), 'expected true for the parked key itself';
  assert not pgchain.parked_ahead('g', 'q', '{"id": 1}'), 'expected false for another pipeline';
  assert not pgchain.parked_ahead('g', 'p', '{"id": 9}'), 'expected false for another key';
  assert not pgchain.parked_ahead('h', 'p', '{"id": 1}'), 'expected false for another group';
  assert not pgchain.parked_ahead('g', 'p', '{"id": "1"}'), 'expected false for a key of another type';
  assert not pgchain.parked_ahead('g', 'p', '{"id": 2}'), 'expected false for a dead row';
  assert not pgchain.parked_ahead('g', 'p', '{"id": 3}'), 'expected false for a replayed row';
  assert not pgchain.parked_ahead('g', 'p', '{"id": 4}'), 'expected false for a discarded row';
  assert not pgchain.parked_ahead('g', 'p', null), 'expected false for a null key';
  assert not pgchain.parked_ahead('g', null, null), 'expected false for no pipeline and no key';
end $$;
