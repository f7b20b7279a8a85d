-- An event at a new offset runs through its chain ('applied') and the ledger
-- records its offset, in the same transaction.
create schema t;
create table t.rows (id int primary key, name text);
create procedure t.upsert(inout ev jsonb) language plpgsql as $$
begin
  insert into t.rows values ((ev->'key'->>'id')::int, ev->'after'->>'name')
  on conflict (id) do update set name = excluded.name;
end $$;

do $$
declare
  v_status text;
  v_ms     float8[];
begin
  call pgchain.apply_event('g', 'topic', 0, 5, 'p', array['t.upsert'],
    '{"key": {"id": 1}, "after": {"name": "Kim"}}', v_status, v_ms);
  assert v_status = 'applied', format('first event: expected applied, found %s', v_status);
  assert cardinality(v_ms) = 1, format('expected one step timing, found %s', v_ms);
  assert (select name from t.rows where id = 1) = 'Kim', 'expected the step to write row 1';
  assert pgchain.applied_position('g', 'topic', 0) = 5,
    format('expected the ledger at 5, found %s', pgchain.applied_position('g', 'topic', 0));

  call pgchain.apply_event('g', 'topic', 0, 9, 'p', array['t.upsert'],
    '{"key": {"id": 1}, "after": {"name": "Lee"}}', v_status, v_ms);
  assert v_status = 'applied', format('later event: expected applied, found %s', v_status);
  assert (select name from t.rows where id = 1) = 'Lee', 'expected the later event to update row 1';
  assert (select applied_through from pgchain.offsets where group_id = 'g' and topic = 'topic' and partition = 0) = 9,
    'expected the ledger moved to 9';
  assert (select count(*) from pgchain.offsets where group_id = 'g' and topic = 'topic') = 1,
    'expected one ledger row for the partition';
end $$;
