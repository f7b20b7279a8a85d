-- Each event gets its own status (applied or filtered) and the ledger ends at
-- the batch's last offset, written once at the end.
create schema t;
create table t.rows (id int primary key);
create procedure t.keep(inout ev jsonb) language plpgsql as $$
begin
  insert into t.rows values ((ev->'key'->>'id')::int);
end $$;
create procedure t.drop_odd(inout ev jsonb) language plpgsql as $$
begin
  if (ev->'key'->>'id')::int % 2 = 1 then
    ev := null;
  end if;
end $$;
create table t.ledger_writes (applied_through bigint);
create function t.log_ledger() returns trigger language plpgsql as $$
begin
  insert into t.ledger_writes values (new.applied_through);
  return new;
end $$;
create trigger log_ledger after insert or update on pgchain.offsets
  for each row execute function t.log_ledger();

do $$
declare
  v_statuses text[];
  v_ms       float8[];
  v_counts   integer[];
begin
  call pgchain.apply_batch('g', 'topic', 0, array[10, 11, 12, 13]::bigint[],
    array['p', 'p', 'p', 'p'],
    array['t.drop_odd,t.keep', 't.drop_odd,t.keep', 't.drop_odd,t.keep', 't.drop_odd,t.keep'],
    array['{"key": {"id": 2}}', '{"key": {"id": 3}}', '{"key": {"id": 4}}', '{"key": {"id": 5}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['applied', 'filtered', 'applied', 'filtered'],
    format('expected applied,filtered,applied,filtered; found %s', v_statuses);
  assert (select array_agg(id order by id) from t.rows) = array[2, 4],
    format('expected rows 2 and 4 kept, found %s', (select array_agg(id order by id) from t.rows));
  assert pgchain.applied_position('g', 'topic', 0) = 13,
    format('expected the ledger at the last offset 13, found %s', pgchain.applied_position('g', 'topic', 0));
  assert not exists (select 1 from t.ledger_writes where applied_through between 10 and 12),
    format('expected the ledger never to be written at an intermediate offset; writes: %s',
           (select array_agg(applied_through) from t.ledger_writes));
  assert (select count(*) from t.ledger_writes where applied_through = 13) = 1,
    'expected exactly one ledger write at 13';
end $$;
