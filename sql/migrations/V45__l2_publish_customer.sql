-- pgchain render: l2.publish_customer (template identity_publish)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l2;

-- Read in id order by whatever delivers to the downstream systems.
create table if not exists l2.customer_outbox (
  id          bigserial primary key,
  customer_id bigint not null,
  change      text   not null check (change in ('created', 'updated', 'merged_into', 'split_from', 'retired')),
  related     bigint,
  golden      jsonb  not null,
  cause       jsonb,
  at          timestamptz not null default now()
);
create index if not exists customer_outbox_customer on l2.customer_outbox (customer_id);

-- The golden record as last published, per customer.
create table if not exists l2.customer_outbox_state (
  customer_id  bigint primary key,
  golden       jsonb  not null,
  published_at timestamptz not null default now()
);

-- Publishes the golden records of p_clusters that changed since they were
-- last published; returns how many.
create or replace function idr.publish(p_clusters bigint[], p_cause jsonb) returns int
language plpgsql as $$
declare
  v_n int;
begin
  with cur as (
    select g.customer_id, g.status, g.merged_into, g.split_from,
           to_jsonb(g) - 'created_at' - 'updated_at' as doc
      from l2.customer g
     where p_clusters is null or g.customer_id = any(p_clusters)),
  -- new: never published, or published as merged or retired and active
  -- again (announced as new, or as split from where its records were)
  changed as (
    select c.*, p.golden is null or p.golden->>'status' <> 'active' as new
      from cur c left join l2.customer_outbox_state p using (customer_id)
     where p.golden is distinct from c.doc),
  written as (
    insert into l2.customer_outbox (customer_id, change, related, golden, cause)
    select c.customer_id,
           case when c.status = 'merged' then 'merged_into'
                when c.status = 'retired' then 'retired'
                when c.new and c.split_from is not null then 'split_from'
                when c.new then 'created'
                else 'updated' end,
           case when c.status = 'merged' then c.merged_into
                when c.new then c.split_from end,
           c.doc, p_cause
      from changed c
     order by c.customer_id
    returning customer_id, golden)
  insert into l2.customer_outbox_state as p (customer_id, golden)
  select w.customer_id, w.golden from written w
  on conflict (customer_id) do update set golden = excluded.golden, published_at = now();
  get diagnostics v_n = row_count;
  return v_n;
end $$;

-- Bulk path: publishes every golden record that changed (after unify_all).
create or replace procedure idr.publish_all() language plpgsql as $$
begin
  perform idr.publish(null, jsonb_build_object('bulk', true));
end $$;

-- L2 publish step: the touched customers whose golden record changed.
create or replace procedure l2.publish_customer(inout ev jsonb) language plpgsql as $$
declare
  v_id jsonb := ev->'identity';
begin
  if v_id is null or jsonb_typeof(v_id->'clusters') <> 'array' then
    raise exception '%: the event has no `identity`; an identity_link step must come first', 'l2.publish_customer'
      using errcode = '22023';
  end if;
  perform idr.publish(
    array(select jsonb_array_elements_text(v_id->'clusters')::bigint),
    jsonb_build_object('system', ev->'record'->>'system', 'source_key', ev->'record'->>'source_key',
                       'topic', ev->'kafka'->>'topic', 'partition', (ev->'kafka'->>'partition')::int,
                       'offset', (ev->'kafka'->>'offset')::bigint));
end $$;
