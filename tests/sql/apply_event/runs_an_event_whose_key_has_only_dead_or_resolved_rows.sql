-- Only a parked row holds a key back: dead, replayed and discarded rows of
-- the key do not, and neither does a parked row of another pipeline.
create schema t;
create procedure t.pass(inout ev jsonb) language plpgsql as $$
begin
  null;
end $$;
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 1, '{"id": 1}', 'dead', 'data', 'bad value', 3, 'dlq'),
       ('g', 'p', 'topic', 0, 2, '{"id": 1}', 'replayed', 'dependency', 'member 1 is missing', 1, 'dlq'),
       ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'discarded', 'dependency', 'member 1 is missing', 1, 'dlq'),
       ('g', 'other', 'topic', 0, 4, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 1, 'dlq');

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 0, 5, 'p', array['t.pass'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'applied', format('expected applied, found %s', v_status);
  assert pgchain.applied_position('g', 'topic', 0) = 5, 'expected the ledger at 5';
end $$;
