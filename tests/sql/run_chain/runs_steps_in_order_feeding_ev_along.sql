-- Each step gets the ev the step before it returned, in the order the steps
-- are listed; the last step's ev comes back with status 'applied'.
create schema t;
create table t.seen (n serial, step text, ev jsonb);
create procedure t.one(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step, ev) values ('one', ev);
  ev := ev || jsonb_build_object('trail', coalesce(ev->'trail', '[]') || '["one"]');
end $$;
create procedure t.two(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step, ev) values ('two', ev);
  ev := ev || jsonb_build_object('trail', coalesce(ev->'trail', '[]') || '["two"]');
end $$;
create procedure t.three(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (step, ev) values ('three', ev);
  ev := ev || jsonb_build_object('trail', coalesce(ev->'trail', '[]') || '["three"]');
end $$;

do $$
declare
  v_ev     jsonb := '{"key": {"id": 1}}';
  v_status text;
  v_ms     float8[];
  v_order  text;
begin
  call pgchain.run_chain(array['t.two', 't.one', 't.three'], v_ev, v_status, v_ms);
  assert v_status = 'applied', format('expected status applied, found %s', v_status);
  assert v_ev = '{"key": {"id": 1}, "trail": ["two", "one", "three"]}'::jsonb,
    format('expected the last step''s ev with trail two, one, three; found %s', v_ev);
  select string_agg(step, ',' order by n) into v_order from t.seen;
  assert v_order = 'two,one,three', format('expected steps to run as two,one,three; found %s', v_order);
  assert (select ev from t.seen where step = 'one') = '{"key": {"id": 1}, "trail": ["two"]}'::jsonb,
    format('expected step one to get step two''s output; it got %s', (select ev from t.seen where step = 'one'));
  assert (select ev from t.seen where step = 'two') = '{"key": {"id": 1}}'::jsonb,
    format('expected the first step to get the event as given; it got %s', (select ev from t.seen where step = 'two'));
end $$;
