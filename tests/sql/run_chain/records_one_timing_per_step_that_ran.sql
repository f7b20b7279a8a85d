-- io_step_ms gets one non-negative timing per step that ran, appended to the
-- timings it already held; a filtered chain times the filtering step too.
create schema t;
create procedure t.pass(inout ev jsonb) language plpgsql as $$
begin
  perform pg_sleep(0.002);
end $$;
create procedure t.drop(inout ev jsonb) language plpgsql as $$
begin
  ev := null;
end $$;

do $$
declare
  v_ev     jsonb := '{"key": {"id": 1}}';
  v_status text;
  v_ms     float8[];
begin
  call pgchain.run_chain(array['t.pass', 't.pass', 't.pass'], v_ev, v_status, v_ms);
  assert cardinality(v_ms) = 3, format('expected 3 timings for 3 steps, found %s', v_ms);
  assert (select bool_and(ms >= 0) from unnest(v_ms) ms), format('expected timings >= 0, found %s', v_ms);
  assert v_ms[1] >= 1, format('expected a step sleeping 2 ms to take at least 1 ms, found %s', v_ms[1]);

  v_ms := array[-7]::float8[];
  v_ev := '{"key": {"id": 2}}';
  call pgchain.run_chain(array['t.pass', 't.drop', 't.pass'], v_ev, v_status, v_ms);
  assert cardinality(v_ms) = 3 and v_ms[1] = -7,
    format('expected the earlier timing kept and 2 appended (filtered at step 2), found %s', v_ms);

  v_ms := null;
  v_ev := '{"key": {"id": 3}}';
  call pgchain.run_chain(array[]::text[], v_ev, v_status, v_ms);
  assert v_status = 'applied' and v_ms = '{}'::float8[],
    format('expected an empty chain to apply with no timings, found %s %s', v_status, v_ms);
end $$;
