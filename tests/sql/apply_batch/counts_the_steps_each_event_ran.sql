-- o_step_ms holds every timing, event after event; o_step_counts[i] says how
-- many of them are event i's (0 for a skipped event, fewer for a filtered one).
create schema t;
create procedure t.pass(inout ev jsonb) language plpgsql as $$
begin
  null;
end $$;
create procedure t.drop(inout ev jsonb) language plpgsql as $$
begin
  ev := null;
end $$;
insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g', 'topic', 0, 1);

do $$
declare
  v_statuses text[];
  v_ms       float8[];
  v_counts   integer[];
begin
  call pgchain.apply_batch('g', 'topic', 0, array[1, 2, 3, 4]::bigint[], array['p', 'p', 'q', 'p'],
    array['t.pass,t.pass', 't.pass,t.pass,t.pass', 't.drop,t.pass,t.pass', 't.pass'],
    array['{"key": {"id": 1}}', '{"key": {"id": 2}}', '{"key": {"id": 3}}', '{"key": {"id": 4}}']::jsonb[],
    v_statuses, v_ms, v_counts);
  assert v_statuses = array['skipped', 'applied', 'filtered', 'applied'],
    format('expected skipped,applied,filtered,applied; found %s', v_statuses);
  assert v_counts = array[0, 3, 1, 1], format('expected step counts {0,3,1,1}, found %s', v_counts);
  assert cardinality(v_ms) = 5, format('expected 5 timings in all, found %s', v_ms);
  assert (select bool_and(ms >= 0) from unnest(v_ms) ms), format('expected timings >= 0, found %s', v_ms);
end $$;
