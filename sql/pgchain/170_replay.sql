-- Replays dead-letter p_id through its chain. The row is the ledger of a
-- replay: it is locked, must still be parked or dead, and becomes replayed in
-- the same transaction as the chain. o_status: applied | filtered | gone
-- (replayed or discarded meanwhile) | behind (an earlier event of its key is
-- still parked; replay that first).
create or replace procedure pgchain.replay(
  p_id         bigint,
  p_steps      text[],
  p_ev         jsonb,
  p_resolution text,
  inout o_status text
) language plpgsql as $$
declare
  v_row     pgchain.dead_letters;
  v_ev      jsonb := p_ev;
  v_step_ms float8[];
begin
  select * into v_row from pgchain.dead_letters where id = p_id for update;
  -- GUARD: replayed or discarded meanwhile (by another instance or by hand).
  if not found or v_row.status not in ('parked', 'dead') then
    o_status := 'gone';
    return;
  end if;
  -- GUARD: the key's order holds: an earlier parked event goes first.
  if v_row.entity_key is not null and exists (
       select 1 from pgchain.dead_letters
        where group_id = v_row.group_id and pipeline = v_row.pipeline
          and entity_key = v_row.entity_key and status = 'parked' and id < p_id) then
    o_status := 'behind';
    return;
  end if;
  call pgchain.run_chain(p_steps, v_ev, o_status, v_step_ms);
  update pgchain.dead_letters
     set status = 'replayed', resolved_at = now(), resolution = p_resolution
   where id = p_id;
end $$;
