-- A redelivered offset (at or below the ledger) is skipped even when its key
-- is parked: PGW02 is only for events that would run.
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 4, '{"id": 7}', 'parked', 'dependency', 'member 7 is missing', 'member:7', 1, 'dlq');
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 4);
create schema t;
create procedure t.pass(inout ev jsonb) language plpgsql as $$
begin
  null;
end $$;

do $$
declare
  v_statuses text[];
  v_ms       float8[];
  v_counts   integer[];
begin
  call pgchain.apply_batch('g', 'topic', 0, array[4, 5]::bigint[], array['p', 'p'],
    array['t.pass', 't.pass'], array['{"key": {"id": 7}}', '{"key": {"id": 8}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['skipped', 'applied'], format('expected skipped,applied; found %s', v_statuses);
  assert pgchain.applied_position('g', 'topic', 0) = 5, 'expected the ledger at 5';
end $$;
