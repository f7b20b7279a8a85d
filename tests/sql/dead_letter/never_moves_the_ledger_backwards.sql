-- Dead-lettering an offset below the ledger (e.g. a key-ordered lane behind
-- the partition) writes the row but leaves the ledger where it is.
do $$
declare
  v_id        bigint;
  v_published boolean;
begin
  insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 50);
  call pgchain.dead_letter('g', 'p', 'topic', 0, 30, null, null, 'v'::bytea, null, null,
    '{"id": 1}', 'dead', 'data', 't.step', '22P02', 'bad', null, 3, 'topic.dlq', v_id, v_published);
  assert v_id is not null, 'expected the row written';
  assert pgchain.applied_position('g', 'topic', 0) = 50,
    format('expected the ledger to stay at 50, found %s', pgchain.applied_position('g', 'topic', 0));
end $$;
