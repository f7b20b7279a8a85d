-- pgchain's own schema: the applied-offset ledger and the chain runner.
-- Every chain runs inside pgchain.apply_event, so the steps and the ledger
-- update commit (or roll back) together.

create schema if not exists pgchain;

-- How far each (consumer group, topic, partition) has been applied.
-- applied_through is the highest offset applied in partition order.
-- applied_above is kept for key-ordered lanes: offsets above applied_through
-- that are already applied while an earlier offset is still in flight.
create table if not exists pgchain.offsets (
  group_id        text        not null,
  topic           text        not null,
  partition       integer     not null,
  applied_through bigint      not null,
  applied_above   bigint[]    not null default '{}',
  updated_at      timestamptz not null default now(),
  primary key (group_id, topic, partition)
);

-- Runs one event through its chain and records its offset, in the caller's
-- transaction. o_status: applied | filtered (a step set ev to null) | skipped
-- (the offset was already applied: a redelivery).
create or replace procedure pgchain.apply_event(
  p_group     text,
  p_topic     text,
  p_partition integer,
  p_offset    bigint,
  p_steps     text[],
  p_ev        jsonb,
  inout o_status text
) language plpgsql as $$
declare
  v_ev   jsonb := p_ev;
  v_step text;
begin
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
    execute format('call %I.%I($1)', split_part(v_step, '.', 1), split_part(v_step, '.', 2))
       into v_ev using v_ev;
    if v_ev is null or v_ev = 'null'::jsonb then
      o_status := 'filtered';
      return;
    end if;
  end loop;
  o_status := 'applied';
end $$;

-- The position to resume a partition from: the last applied offset, or null.
create or replace function pgchain.applied_position(p_group text, p_topic text, p_partition integer)
returns bigint language sql stable as $$
  select applied_through from pgchain.offsets
   where group_id = p_group and topic = p_topic and partition = p_partition
$$;
