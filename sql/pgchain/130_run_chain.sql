-- Runs one event through its steps, in the caller's transaction: the one
-- implementation of the chain that apply_event, apply_batch and replay share.
-- Each step is `schema.procedure(inout ev jsonb)`; its output feeds the next.
-- io_status: applied, or filtered when a step set ev to null (the chain ends
-- there). io_step_ms gets how long each step that ran took, appended.
create or replace procedure pgchain.run_chain(
  p_steps       text[],
  inout io_ev       jsonb,
  inout io_status   text,
  inout io_step_ms  float8[]
) language plpgsql as $$
declare
  v_step text;
  v_at   timestamptz;
begin
  io_status := 'applied';
  io_step_ms := coalesce(io_step_ms, '{}');
  foreach v_step in array p_steps loop
    v_at := clock_timestamp();
    execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
       into io_ev using io_ev;
    io_step_ms := io_step_ms || (extract(epoch from clock_timestamp() - v_at) * 1000)::float8;
    -- GUARD: a step that sets ev to null ends the chain: a filter.
    if io_ev is null or io_ev = 'null'::jsonb then
      io_status := 'filtered';
      return;
    end if;
  end loop;
end $$;
