-- Records that offsets p_from..p_to of a partition were never applied (and
-- cannot be: the log no longer holds them) and moves the ledger past them,
-- in one transaction. Recording the same gap twice (a restart in between)
-- writes one row.
create or replace procedure pgchain.skip_gap(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_from      bigint,
  p_to        bigint,
  p_reason    text
) language plpgsql as $$
begin
  if not exists (select 1 from pgchain.skipped_offsets
                  where group_id = p_group and topic = p_topic and partition = p_partition
                    and from_offset = p_from and to_offset = p_to) then
    insert into pgchain.skipped_offsets (group_id, topic, partition, from_offset, to_offset, reason)
    values (p_group, p_topic, p_partition, p_from, p_to, p_reason);
  end if;
  call pgchain.advance(p_group, p_topic, p_partition, p_to);
end $$;
