-- pgchain render: idr.unify_member (template identity_unify)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l2;

-- One row per customer (identity cluster); never deleted.
create table if not exists l2.customer (
  customer_id bigint primary key,
  records     int    not null,
  systems     text[] not null,
  status      text   not null default 'active' check (status in ('active', 'merged', 'retired')),
  merged_into bigint,
  split_from  bigint,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
alter table l2.customer add column if not exists name text;
alter table l2.customer add column if not exists phone text;
alter table l2.customer add column if not exists email text;
alter table l2.customer add column if not exists birth_date date;
alter table l2.customer add column if not exists address text;
alter table l2.customer add column if not exists phones text[] not null default '{}';
alter table l2.customer add column if not exists emails text[] not null default '{}';

-- Recomputes the golden records of p_clusters. Gone clusters are marked
-- merged (p_merged: {gone: survivor}) or retired; new clusters from a
-- split (p_split: {new: from}) say where they came from.
create or replace function idr.unify(p_clusters bigint[], p_merged jsonb, p_split jsonb) returns void
language plpgsql as $$
begin
  insert into l2.customer as g (customer_id, name, phone, email, birth_date, address, phones, emails, records, systems, status, split_from)
  select x.cluster_id, x.name, x.phone, x.email, x.birth_date, x.address, x.phones, x.emails, x.records, x.systems, 'active', (p_split->>x.cluster_id::text)::bigint
    from (with m as (
    select r.cluster_id, r.seq, u.*
      from idr.records r
      join l1.member_union u on u.system = r.system and u.source_key = r.source_key
     where r.cluster_id = any(p_clusters))
  select m.cluster_id,
         (array_agg(m.name order by array_position(array['crm', 'sales', 'options']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.name)::text), '') is not null))[1]::text as name,
         (mode() within group (order by m.phone) filter (where nullif(btrim((m.phone)::text), '') is not null))::text as phone,
         (array_agg(m.email order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.email)::text), '') is not null))[1]::text as email,
         (array_agg(m.birth_date order by m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.birth_date)::text), '') is not null))[1]::date as birth_date,
         (array_agg(m.address order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.address)::text), '') is not null))[1]::text as address,
         coalesce(array_agg(distinct nullif(btrim((m.phone)::text), '') order by nullif(btrim((m.phone)::text), '')) filter (where nullif(btrim((m.phone)::text), '') is not null), '{}') as phones,
         coalesce(array_agg(distinct nullif(btrim((m.email)::text), '') order by nullif(btrim((m.email)::text), '')) filter (where nullif(btrim((m.email)::text), '') is not null), '{}') as emails,
         count(*)::int as records,
         array_agg(distinct m.system order by m.system) as systems
    from m
   group by m.cluster_id) x
  on conflict (customer_id) do update
     set name = excluded.name, phone = excluded.phone, email = excluded.email, birth_date = excluded.birth_date, address = excluded.address, phones = excluded.phones, emails = excluded.emails, records = excluded.records, systems = excluded.systems,
         status = 'active', merged_into = null, updated_at = now(),
         -- a customer active again (its oldest record leads a cluster again)
         split_from = case when g.status = 'active' then g.split_from else excluded.split_from end
   where (g.name, g.phone, g.email, g.birth_date, g.address, g.phones, g.emails, g.records, g.systems, g.status)
         is distinct from
         (excluded.name, excluded.phone, excluded.email, excluded.birth_date, excluded.address, excluded.phones, excluded.emails, excluded.records, excluded.systems, 'active');
  update l2.customer g
     set status = case when p_merged ? g.customer_id::text then 'merged' else 'retired' end,
         merged_into = (p_merged->>g.customer_id::text)::bigint,
         updated_at = now()
   where g.customer_id = any(p_clusters)
     and not exists (select 1 from idr.records r where r.cluster_id = g.customer_id)
     and (g.status, g.merged_into) is distinct from
         (case when p_merged ? g.customer_id::text then 'merged' else 'retired' end, (p_merged->>g.customer_id::text)::bigint);
end $$;

-- Bulk path: every golden record from the graph at once (after rebuild).
-- Customers whose cluster no longer exists are retired.
create or replace procedure idr.unify_all() language plpgsql as $$
begin
  insert into l2.customer as g (customer_id, name, phone, email, birth_date, address, phones, emails, records, systems, status, split_from)
  select x.cluster_id, x.name, x.phone, x.email, x.birth_date, x.address, x.phones, x.emails, x.records, x.systems, 'active', null::bigint
    from (with m as (
    select r.cluster_id, r.seq, u.*
      from idr.records r
      join l1.member_union u on u.system = r.system and u.source_key = r.source_key
     where true)
  select m.cluster_id,
         (array_agg(m.name order by array_position(array['crm', 'sales', 'options']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.name)::text), '') is not null))[1]::text as name,
         (mode() within group (order by m.phone) filter (where nullif(btrim((m.phone)::text), '') is not null))::text as phone,
         (array_agg(m.email order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.email)::text), '') is not null))[1]::text as email,
         (array_agg(m.birth_date order by m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.birth_date)::text), '') is not null))[1]::date as birth_date,
         (array_agg(m.address order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.address)::text), '') is not null))[1]::text as address,
         coalesce(array_agg(distinct nullif(btrim((m.phone)::text), '') order by nullif(btrim((m.phone)::text), '')) filter (where nullif(btrim((m.phone)::text), '') is not null), '{}') as phones,
         coalesce(array_agg(distinct nullif(btrim((m.email)::text), '') order by nullif(btrim((m.email)::text), '')) filter (where nullif(btrim((m.email)::text), '') is not null), '{}') as emails,
         count(*)::int as records,
         array_agg(distinct m.system order by m.system) as systems
    from m
   group by m.cluster_id) x
  on conflict (customer_id) do update
     set name = excluded.name, phone = excluded.phone, email = excluded.email, birth_date = excluded.birth_date, address = excluded.address, phones = excluded.phones, emails = excluded.emails, records = excluded.records, systems = excluded.systems,
         status = 'active', merged_into = null, updated_at = now(),
         -- a customer active again (its oldest record leads a cluster again)
         split_from = case when g.status = 'active' then g.split_from else excluded.split_from end
   where (g.name, g.phone, g.email, g.birth_date, g.address, g.phones, g.emails, g.records, g.systems, g.status)
         is distinct from
         (excluded.name, excluded.phone, excluded.email, excluded.birth_date, excluded.address, excluded.phones, excluded.emails, excluded.records, excluded.systems, 'active');
  update l2.customer g
     set status = 'retired', updated_at = now()
   where g.status = 'active'
     and not exists (select 1 from idr.records r where r.cluster_id = g.customer_id);
  analyze l2.customer;
end $$;

-- L2 unify step: the golden records of the clusters the link step touched.
create or replace procedure idr.unify_member(inout ev jsonb) language plpgsql as $$
declare
  v_id jsonb := ev->'identity';
begin
  if v_id is null or jsonb_typeof(v_id->'clusters') <> 'array' then
    raise exception '%: the event has no `identity`; an identity_link step must come first', 'idr.unify_member'
      using errcode = '22023';
  end if;
  perform idr.unify(
    array(select jsonb_array_elements_text(v_id->'clusters')::bigint),
    coalesce(v_id->'merged', '{}'), coalesce(v_id->'split', '{}'));
end $$;
