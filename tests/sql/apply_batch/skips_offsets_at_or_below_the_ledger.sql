-- Offsets at or below the ledger (a redelivered part of the batch) are
-- 'skipped' with no steps run; the rest apply and the ledger moves on.
create schema t;
create table t.seen (id int);
create procedure t.note(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen values ((ev->'key'->>'id')::int);
end $$;
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 1, 21);

do $$
declare
  v_statuses text[];
  v_ms       float8[];
  v_counts   integer[];
begin
  call pgchain.apply_batch('g', 'topic', 1, array[20, 21, 22]::bigint[], array['p', 'p', 'p'],
    array['t.note', 't.note', 't.note'],
    array['{"key": {"id": 20}}', '{"key": {"id": 21}}', '{"key": {"id": 22}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['skipped', 'skipped', 'applied'],
    format('expected skipped,skipped,applied; found %s', v_statuses);
  assert (select array_agg(id) from t.seen) = array[22],
    format('expected only event 22 to run, found %s', (select array_agg(id) from t.seen));
  assert pgchain.applied_position('g', 'topic', 1) = 22,
    format('expected the ledger at 22, found %s', pgchain.applied_position('g', 'topic', 1));

  -- A batch that is all redelivery leaves the ledger where it was.
  call pgchain.apply_batch('g', 'topic', 1, array[21, 22]::bigint[], array['p', 'p'],
    array['t.note', 't.note'], array['{"key": {"id": 21}}', '{"key": {"id": 22}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['skipped', 'skipped'], format('expected skipped,skipped; found %s', v_statuses);
  assert v_ms = '{}'::float8[] and v_counts = array[0, 0],
    format('expected no timings and zero step counts, found %s %s', v_ms, v_counts);
  assert pgchain.applied_position('g', 'topic', 1) = 22, 'expected the ledger to stay at 22';
end $$;
