-- An empty batch returns empty results and does not touch the ledger, not
-- even to create the partition's row.
do $$
declare
  v_statuses text[] := array['x'];
  v_ms       float8[] := array[1];
  v_counts   integer[] := array[1];
begin
  call pgchain.apply_batch('g', 'topic', 0, array[]::bigint[], array[]::text[], array[]::text[],
    array[]::jsonb[], v_statuses, v_ms, v_counts);
  assert v_statuses = '{}'::text[] and v_ms = '{}'::float8[] and v_counts = '{}'::integer[],
    format('expected empty results, found %s %s %s', v_statuses, v_ms, v_counts);
  assert pgchain.applied_position('g', 'topic', 0) is null, 'expected no ledger row for an empty batch';

  call pgchain.apply_batch('g', 'topic', 0, null, null, null, null, v_statuses, v_ms, v_counts);
  assert v_statuses = '{}'::text[], format('null batch: expected empty statuses, found %s', v_statuses);
  assert pgchain.applied_position('g', 'topic', 0) is null, 'expected no ledger row for a null batch';
end $$;
