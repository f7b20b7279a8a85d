-- Step timings: both runners report how long each step took, for the
-- per-step latency histogram of /metrics. Same logic as V15 otherwise.

drop procedure if exists pgchain.apply_event(text, text, integer, bigint, text, text[], jsonb, text);
drop procedure if exists pgchain.apply_batch(text, text, integer, bigint[], text[], text[], jsonb[], text[]);

-- Runs one event through its chain and records its offset, in the caller's
-- transaction. o_status: applied | filtered (a step set ev to null) | skipped
-- (the offset was already applied: a redelivery) | behind (an earlier event
-- of its key is parked; nothing ran and the ledger did not move).
-- o_step_ms[i]: how long step i took, for the steps that ran.
create or replace procedure pgchain.apply_event(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offset    bigint,
  p_pipeline  text,
  p_steps     text[],
  p_ev        jsonb,
  inout o_status text,
  inout o_step_ms float8[]
) language plpgsql as $$
declare
  v_ev   jsonb := p_ev;
  v_step text;
  v_pos  bigint;
  v_at   timestamptz;
begin
  o_step_ms := '{}';
  -- GUARD: an earlier event of this key is parked. Rare: read the ledger
  -- first so a redelivery is still skipped, not parked a second time.
  if pgchain.parked_ahead(p_group, p_pipeline, p_ev->'key') then
    select applied_through into v_pos from pgchain.offsets
     where group_id = p_group and topic = p_topic and partition = p_partition;
    if v_pos is not null and p_offset <= v_pos then
      o_status := 'skipped';
    else
      o_status := 'behind';
    end if;
    return;
  end if;
  -- GUARD: a redelivered offset at or below the ledger is skipped untouched.
  -- The update locks the ledger row, so two consumers of one partition
  -- (a rebalance overlap) serialise here and the second one skips.
  update pgchain.offsets
     set applied_through = p_offset, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < p_offset;
  if not found then
    insert into pgchain.offsets (group_id, topic, partition, applied_through)
    values (p_group, p_topic, p_partition, p_offset)
    on conflict do nothing;
    if not found then
      o_status := 'skipped';
      return;
    end if;
  end if;

  -- Each step is `schema.procedure(inout ev jsonb)`; its output feeds the next.
  foreach v_step in array p_steps loop
    v_at := clock_timestamp();
    execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
       into v_ev using v_ev;
    o_step_ms := o_step_ms || (extract(epoch from clock_timestamp() - v_at) * 1000)::float8;
    if v_ev is null or v_ev = 'null'::jsonb then
      o_status := 'filtered';
      return;
    end if;
  end loop;
  o_status := 'applied';
end $$;

-- Runs p_evs (offset order, one partition) through their chains in one
-- transaction. p_chains[i] is event i's chain as `schema.proc,schema.proc`.
-- o_statuses[i]: applied | filtered | skipped, as for pgchain.apply_event.
-- An event whose key is parked raises PGW02: the caller runs the batch one
-- event at a time instead. o_step_ms holds the time of every step that ran,
-- event after event; o_step_counts[i] says how many of them are event i's.
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
  v_step   text;
  v_status text;
  v_at     timestamptz;
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
  for i in 1 .. coalesce(array_length(p_offsets, 1), 0) loop
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
    v_status := 'applied';
    v_ran := 0;
    foreach v_step in array string_to_array(p_chains[i], ',') loop
      v_at := clock_timestamp();
      execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
         into v_ev using v_ev;
      o_step_ms := o_step_ms || (extract(epoch from clock_timestamp() - v_at) * 1000)::float8;
      v_ran := v_ran + 1;
      if v_ev is null or v_ev = 'null'::jsonb then
        v_status := 'filtered';
        exit;
      end if;
    end loop;
    o_statuses := o_statuses || v_status;
    o_step_counts := o_step_counts || v_ran;
    v_pos := p_offsets[i];
  end loop;
  update pgchain.offsets set applied_through = v_pos, updated_at = now()
   where group_id = p_group and topic = p_topic and partition = p_partition
     and applied_through < v_pos;
end $$;

