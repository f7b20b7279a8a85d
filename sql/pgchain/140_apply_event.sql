-- Runs one event through its chain and records its offset, in the caller's
-- transaction. o_status: applied | filtered (a step set ev to null) | skipped
-- (the offset was already applied: a redelivery) | behind (an earlier event
-- of its key is parked; nothing ran and the ledger did not move).
-- o_step_ms[i]: how long step i took, for the steps that ran.

-- The first runtime's signature, without pipeline and step timings.
drop procedure if exists pgchain.apply_event(text, text, integer, bigint, text[], jsonb, text);

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
  v_ev  jsonb := p_ev;
  v_pos bigint;
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
  call pgchain.run_chain(p_steps, v_ev, o_status, o_step_ms);
end $$;
