-- The position to resume a partition from: the last applied offset, or null.
create or replace function pgchain.applied_position(p_group text, p_topic text, p_partition integer)
returns bigint language sql stable as $$
  select applied_through from pgchain.offsets
   where group_id = p_group and topic = p_topic and partition = p_partition
$$;
