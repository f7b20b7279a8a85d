-- Micro-batches: several events of one partition in one transaction.
-- Each event still runs its whole chain; the ledger moves once per batch.

-- Runs p_evs (offset order, one partition) through their chains.
-- p_chains[i] is event i's chain as `schema.proc,schema.proc`.
-- o_statuses[i]: applied | filtered | skipped, as for pgchain.apply_event.
create or replace procedure pgchain.apply_batch(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offsets   bigint[],
  p_chains    text[],
  p_evs       jsonb[],
  inout o_statuses text[]
) language plpgsql as $$
declare
  v_pos    bigint;
  v_ev     jsonb;
  v_step   text;
  v_status text;
begin
  o_statuses := '{}';
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
  for i in 1 .. coalesce(array_length(p_offsets, 1), 0) loop
    -- GUARD: a redelivered offset at or below the ledger is skipped untouched.
    if p_offsets[i] <= v_pos then
      o_statuses := o_statuses || 'skipped'::text;
      continue;
    end if;
    v_ev := p_evs[i];
    v_status := 'applied';
    foreach v_step in array string_to_array(p_chains[i], ',') loop
      execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
         into v_ev using v_ev;
      if v_ev is null or v_ev = 'null'::jsonb then
        v_status := 'filtered';
        exit;
      end if;
    end loop;
    o_statuses := o_statuses || v_status;
    v_pos := p_offsets[i];
  end loop;
  update pgchain.offsets set applied_through = v_pos, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < v_pos;
end $$;
