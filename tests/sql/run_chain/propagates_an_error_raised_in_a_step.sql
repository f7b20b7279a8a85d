-- An error raised in a step comes out of run_chain unchanged: same sqlstate,
-- message and detail.
create schema t;
create procedure t.needs_member(inout ev jsonb) language plpgsql as $$
begin
  raise exception 'member % is missing', ev->'key'->>'id'
    using errcode = 'PGW01', detail = 'member:' || (ev->'key'->>'id');
end $$;
create procedure t.after(inout ev jsonb) language plpgsql as $$
begin
  ev := ev || '{"after": true}';
end $$;

do $$
declare
  v_ev      jsonb := '{"key": {"id": 42}}';
  v_status  text;
  v_ms      float8[];
  v_state   text;
  v_message text;
  v_detail  text;
begin
  begin
    call pgchain.run_chain(array['t.needs_member', 't.after'], v_ev, v_status, v_ms);
    raise exception 'expected run_chain to raise PGW01, it returned status %', v_status;
  exception when sqlstate 'PGW01' then
    get stacked diagnostics v_state = returned_sqlstate, v_message = message_text, v_detail = pg_exception_detail;
  end;
  assert v_message = 'member 42 is missing', format('expected the step''s message, found %s', v_message);
  assert v_detail = 'member:42', format('expected detail member:42, found %s', v_detail);
end $$;
