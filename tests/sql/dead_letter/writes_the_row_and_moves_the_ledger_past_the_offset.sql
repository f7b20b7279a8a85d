-- dead_letter writes the event's row (as parked or dead, with its class,
-- step, error and awaited key) and moves the ledger past its offset.
do $$
declare
  v_id        bigint;
  v_published boolean;
  v_row       pgchain.dead_letters;
begin
  insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 10);
  call pgchain.dead_letter('g', 'p', 'topic', 0, 14, 1700000000000, 'k'::bytea, 'v'::bytea,
    array['trace'], array['abc'::bytea], '{"id": 1}', 'parked', 'dependency', 't.link', 'PGW01',
    'member 1 is missing', 'member:1', 2, 'topic.dlq', v_id, v_published);
  assert v_id is not null, 'expected the new row''s id';
  assert v_published = false, format('expected published false, found %s', v_published);
  select * into v_row from pgchain.dead_letters where id = v_id;
  assert v_row.group_id = 'g' and v_row.pipeline = 'p' and v_row.topic = 'topic'
     and v_row.partition = 0 and v_row.kafka_offset = 14 and v_row.kafka_timestamp = 1700000000000,
    format('expected the row''s coordinates g/p/topic/0/14, found %s', row_to_json(v_row));
  assert v_row.status = 'parked' and v_row.error_class = 'dependency' and v_row.failing_step = 't.link'
     and v_row.sqlstate = 'PGW01' and v_row.error_message = 'member 1 is missing'
     and v_row.awaits = 'member:1' and v_row.attempts = 2 and v_row.dlq_topic = 'topic.dlq'
     and v_row.entity_key = '{"id": 1}'::jsonb,
    format('expected the row as given, found %s', row_to_json(v_row));
  assert v_row.replays = 0 and v_row.published_at is null and v_row.resolved_at is null and v_row.resolution is null,
    format('expected a fresh open row, found %s', row_to_json(v_row));
  assert pgchain.applied_position('g', 'topic', 0) = 14,
    format('expected the ledger moved to 14, found %s', pgchain.applied_position('g', 'topic', 0));

  -- A dead event on a partition with no ledger row yet creates it.
  call pgchain.dead_letter('g', 'p', 'topic', 5, 3, null, null, 'x'::bytea, null, null,
    '{"id": 2}', 'dead', 'data', 't.link', '22P02', 'invalid input', null, 3, 'topic.dlq', v_id, v_published);
  assert (select status = 'dead' and error_class = 'data' from pgchain.dead_letters where id = v_id),
    'expected a dead row of class data';
  assert pgchain.applied_position('g', 'topic', 5) = 3,
    format('expected a ledger row at 3, found %s', pgchain.applied_position('g', 'topic', 5));
end $$;
