-- True (and the parked rows locked until commit) when an earlier event of
-- this key waits in the dead-letter table: the event must park behind it.
-- The lock orders this against a replay of those rows in flight.
create or replace function pgchain.parked_ahead(p_group text, p_pipeline text, p_key jsonb)
returns boolean language plpgsql as $$
begin
  if not exists (select 1 from pgchain.dead_letters
                  where group_id = p_group and pipeline = p_pipeline
                    and entity_key = p_key and status = 'parked') then
    return false;
  end if;
  perform 1 from pgchain.dead_letters
   where group_id = p_group and pipeline = p_pipeline
     and entity_key = p_key and status = 'parked'
     for update;
  return found;
end $$;
