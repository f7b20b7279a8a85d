-- Runs p_evs (offset order, one partition) through their chains in one
-- transaction; the ledger moves once. p_chains[i] is event i's chain as
-- `schema.proc,schema.proc`. o_statuses[i]: applied | filtered | skipped, as
-- for pgchain.apply_event. An event whose key is parked raises PGW02: the
-- caller runs the batch one event at a time instead. o_step_ms holds the
-- time of every step that ran, event after event; o_step_counts[i] says how
-- many of them are event i's.

-- The first runtime's signature, without pipelines and step timings.
drop procedure if exists pgchain.apply_batch(text, text, integer, bigint[], text[], jsonb[], text[]);

create or replace procedure pgchain.apply_batch(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offsets   bigint[],
  p_pipelines text[],
  p_chains    text[],
  p_evs       jsonb[],
  inout o_statuses text[],
  inout o_step_ms float8[],
  inout o_step_counts integer[]
) language plpgsql as $$
declare
  v_pos    bigint;
  v_ev     jsonb;
  v_status text;
  v_ran    integer;
begin
  o_statuses := '{}';
  o_step_ms := '{}';
  o_step_counts := '{}';
  -- GUARD: an empty batch touches nothing (not even the ledger).
  if coalesce(array_length(p_offsets, 1), 0) = 0 then
    return;
  end if;
  insert into pgchain.offsets (group_id, topic, partition, applied_through)
  values (p_group, p_topic, p_partition, -1)
  on conflict do nothing;
  -- The row lock serialises two consumers of one partition (a rebalance overlap).
  select applied_through into v_pos from pgchain.offsets
   where group_id = p_group and topic = p_topic and partition = p_partition
     for update;
  for i in 1 .. array_length(p_offsets, 1) loop
    -- GUARD: a redelivered offset at or below the ledger is skipped untouched.
    if p_offsets[i] <= v_pos then
      o_statuses := o_statuses || 'skipped'::text;
      o_step_counts := o_step_counts || 0;
      continue;
    end if;
    -- GUARD: an event parked behind its key is handled one at a time.
    if pgchain.parked_ahead(p_group, p_pipelines[i], p_evs[i]->'key') then
      raise exception 'offset % of %/% waits behind a parked event of its key', p_offsets[i], p_topic, p_partition
        using errcode = 'PGW02';
    end if;
    v_ev := p_evs[i];
    v_ran := coalesce(array_length(o_step_ms, 1), 0);
    call pgchain.run_chain(string_to_array(p_chains[i], ','), v_ev, v_status, o_step_ms);
    o_statuses := o_statuses || v_status;
    o_step_counts := o_step_counts || (coalesce(array_length(o_step_ms, 1), 0) - v_ran);
    v_pos := p_offsets[i];
  end loop;
  update pgchain.offsets set applied_through = v_pos, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < v_pos;
end $$;
