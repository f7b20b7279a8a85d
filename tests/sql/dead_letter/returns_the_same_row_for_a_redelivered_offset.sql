-- Dead-lettering the same offset again (a redelivery) returns the row written
-- before, with its published flag, and writes nothing new.
do $$
declare
  v_first     bigint;
  v_id        bigint;
  v_published boolean;
begin
  call pgchain.dead_letter('g', 'p', 'topic', 0, 14, null, 'k'::bytea, 'v'::bytea, null, null,
    '{"id": 1}', 'parked', 'dependency', 't.link', 'PGW01', 'member 1 is missing', 'member:1', 1,
    'topic.dlq', v_first, v_published);
  update pgchain.dead_letters set published_at = now() where id = v_first;

  call pgchain.dead_letter('g', 'p', 'topic', 0, 14, null, 'k2'::bytea, 'v2'::bytea, null, null,
    '{"id": 1}', 'dead', 'data', 't.other', 'XX000', 'another error', null, 5, 'topic.dlq', v_id, v_published);
  assert v_id = v_first, format('expected the first row''s id %s, found %s', v_first, v_id);
  assert v_published, 'expected published true for a row already published';
  assert (select count(*) from pgchain.dead_letters where group_id = 'g' and topic = 'topic') = 1,
    format('expected one row, found %s', (select count(*) from pgchain.dead_letters where group_id = 'g' and topic = 'topic'));
  assert (select status = 'parked' and msg_value = 'v'::bytea and attempts = 1 from pgchain.dead_letters where id = v_first),
    'expected the first row unchanged by the second call';

  -- The same offset in another partition is another event.
  call pgchain.dead_letter('g', 'p', 'topic', 1, 14, null, null, null, null, null,
    '{"id": 1}', 'parked', 'dependency', 't.link', 'PGW01', 'member 1 is missing', 'member:1', 1,
    'topic.dlq', v_id, v_published);
  assert v_id <> v_first, 'expected a new row for another partition';
end $$;
