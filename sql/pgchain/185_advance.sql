-- Moves the ledger forward to p_offset, never back: past an offset that ran
-- nothing (a skipped tombstone ending a batch, so that the lag `pgchain
-- status` shows counts it) or a gap recorded by pgchain.skip_gap.
create or replace procedure pgchain.advance(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offset    bigint
) language sql as $$
  insert into pgchain.offsets (group_id, topic, partition, applied_through)
  values (p_group, p_topic, p_partition, p_offset)
  on conflict (group_id, topic, partition) do update
     set applied_through = greatest(pgchain.offsets.applied_through, excluded.applied_through),
         updated_at = now()
   where pgchain.offsets.applied_through < excluded.applied_through;
$$;
