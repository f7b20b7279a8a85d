-- Moves the ledger to p_offset for an offset that ran nothing (a skipped
-- tombstone at the end of a batch), so that the position, and the lag
-- `pgchain status` shows, count it. Never moves the ledger back.
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
