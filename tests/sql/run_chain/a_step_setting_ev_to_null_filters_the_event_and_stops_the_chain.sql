-- A step that sets ev to null (SQL null or JSON null) filters the event:
-- the status is 'filtered' and the steps after it do not run.
create schema t;
create table t.seen (n serial, step text);
create procedure t.first(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step) values ('first');
end $$;
create procedure t.drop_sql_null(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step) values ('drop_sql_null');
  ev := null;
end $$;
create procedure t.drop_json_null(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step) values ('drop_json_null');
  ev := 'null'::jsonb;
end $$;
create procedure t.after(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step) values ('after');
end $$;

do $$
declare
  v_ev     jsonb := '{"key": {"id": 1}}';
  v_status text;
  v_ms     float8[];
  v_order  text;
begin
  call pgchain.run_chain(array['t.first', 't.drop_sql_null', 't.after'], v_ev, v_status, v_ms);
  assert v_status = 'filtered', format('SQL null: expected status filtered, found %s', v_status);
  select string_agg(step, ',' order by n) into v_order from t.seen;
  assert v_order = 'first,drop_sql_null',
    format('SQL null: expected only first,drop_sql_null to run; found %s', v_order);

  delete from t.seen;
  v_ev := '{"key": {"id": 2}}';
  v_status := null;
  v_ms := null;
  call pgchain.run_chain(array['t.drop_json_null', 't.after'], v_ev, v_status, v_ms);
  assert v_status = 'filtered', format('JSON null: expected status filtered, found %s', v_status);
  select string_agg(step, ',' order by n) into v_order from t.seen;
  assert v_order = 'drop_json_null', format('JSON null: expected only drop_json_null to run; found %s', v_order);
end $$;
