-- An offset at or below the ledger's applied_through is a redelivery: it is
-- 'skipped', its steps do not run and the ledger stays where it was.
create schema t;
create table t.calls (n int);
create procedure t.count(inout ev jsonb) language plpgsql as $$
begin
  insert into t.calls values (1);
end $$;
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 3, 10);

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 3, 10, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'skipped', format('offset = ledger: expected skipped, found %s', v_status);
  assert v_ms = '{}'::float8[], format('expected no timings for a skipped event, found %s', v_ms);
  call pgchain.apply_event('g', 'topic', 3, 4, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'skipped', format('offset < ledger: expected skipped, found %s', v_status);
  assert not exists (select 1 from t.calls), 'expected no step to run for a redelivered offset';
  assert pgchain.applied_position('g', 'topic', 3) = 10,
    format('expected the ledger to stay at 10, found %s', pgchain.applied_position('g', 'topic', 3));

  -- The same offset in another partition or group is not a redelivery.
  call pgchain.apply_event('g', 'topic', 4, 4, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'applied', format('other partition: expected applied, found %s', v_status);
  call pgchain.apply_event('h', 'topic', 3, 4, 'p', array['t.count'], '{"key": {"id": 1}}', v_status, v_ms);
  assert v_status = 'applied', format('other group: expected applied, found %s', v_status);
end $$;
