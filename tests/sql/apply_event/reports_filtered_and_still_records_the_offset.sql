-- An event a step filters out (ev set to null) is 'filtered', and its
-- offset is still recorded so it is not run again.
create schema t;
create procedure t.drop(inout ev jsonb) language plpgsql as $$
begin
  ev := null;
end $$;

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 0, 7, 'p', array['t.drop'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'filtered', format('expected filtered, found %s', v_status);
  assert pgchain.applied_position('g', 'topic', 0) = 7,
    format('expected the ledger at 7, found %s', pgchain.applied_position('g', 'topic', 0));
  call pgchain.apply_event('g', 'topic', 0, 7, 'p', array['t.drop'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'skipped', format('redelivery of a filtered offset: expected skipped, found %s', v_status);
end $$;
