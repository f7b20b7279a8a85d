-- pgchain render: people.unify_person (template identity_unify)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists people;

-- One row per customer (identity cluster); never deleted.
create table if not exists people.golden (
  customer_id bigint primary key,
  records     int    not null,
  systems     text[] not null,
  status      text   not null default 'active' check (status in ('active', 'merged', 'retired')),
  merged_into bigint,
  split_from  bigint,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
alter table people.golden add column if not exists given text;
alter table people.golden add column if not exists surname text;
alter table people.golden add column if not exists birth_date date;
alter table people.golden add column if not exists national_id text;
alter table people.golden add column if not exists phone text;
alter table people.golden add column if not exists email text;
alter table people.golden add column if not exists phones text[] not null default '{}';
alter table people.golden add column if not exists emails text[] not null default '{}';

-- Recomputes the golden records of p_clusters. Gone clusters are marked
-- merged (p_merged: {gone: survivor}) or retired; new clusters from a
-- split (p_split: {new: from}) say where they came from.
create or replace function people.unify(p_clusters bigint[], p_merged jsonb, p_split jsonb) returns void
language plpgsql as $$
begin
  insert into people.golden as g (customer_id, given, surname, birth_date, national_id, phone, email, phones, emails, records, systems, status, split_from)
  select x.cluster_id, x.given, x.surname, x.birth_date, x.national_id, x.phone, x.email, x.phones, x.emails, x.records, x.systems, 'active', (p_split->>x.cluster_id::text)::bigint
    from (with m as (
    select r.cluster_id, r.seq, u.*
      from people.records r
      join l1.person u on u.system = r.system and u.source_key = r.source_key
     where r.cluster_id = any(p_clusters))
  select m.cluster_id,
         (array_agg(m.given order by array_position(array['register', 'insurer', 'clinic']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.given)::text), '') is not null))[1]::text as given,
         (array_agg(m.surname order by array_position(array['register', 'insurer', 'clinic']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.surname)::text), '') is not null))[1]::text as surname,
         (mode() within group (order by m.birth_date) filter (where nullif(btrim((m.birth_date)::text), '') is not null))::date as birth_date,
         (array_agg(m.national_id order by array_position(array['register', 'insurer']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.national_id)::text), '') is not null))[1]::text as national_id,
         (array_agg(m.phone order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.phone)::text), '') is not null))[1]::text as phone,
         (array_agg(m.email order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.email)::text), '') is not null))[1]::text as email,
         coalesce(array_agg(distinct nullif(btrim((m.phone)::text), '') order by nullif(btrim((m.phone)::text), '')) filter (where nullif(btrim((m.phone)::text), '') is not null), '{}') as phones,
         coalesce(array_agg(distinct nullif(btrim((m.email)::text), '') order by nullif(btrim((m.email)::text), '')) filter (where nullif(btrim((m.email)::text), '') is not null), '{}') as emails,
         count(*)::int as records,
         array_agg(distinct m.system order by m.system) as systems
    from m
   group by m.cluster_id) x
  on conflict (customer_id) do update
     set given = excluded.given, surname = excluded.surname, birth_date = excluded.birth_date, national_id = excluded.national_id, phone = excluded.phone, email = excluded.email, phones = excluded.phones, emails = excluded.emails, records = excluded.records, systems = excluded.systems,
         status = 'active', merged_into = null, updated_at = now(),
         -- a customer active again (its oldest record leads a cluster again)
         split_from = case when g.status = 'active' then g.split_from else excluded.split_from end
   where (g.given, g.surname, g.birth_date, g.national_id, g.phone, g.email, g.phones, g.emails, g.records, g.systems, g.status)
         is distinct from
         (excluded.given, excluded.surname, excluded.birth_date, excluded.national_id, excluded.phone, excluded.email, excluded.phones, excluded.emails, excluded.records, excluded.systems, 'active');
  update people.golden g
     set status = case when p_merged ? g.customer_id::text then 'merged' else 'retired' end,
         merged_into = (p_merged->>g.customer_id::text)::bigint,
         updated_at = now()
   where g.customer_id = any(p_clusters)
     and not exists (select 1 from people.records r where r.cluster_id = g.customer_id)
     and (g.status, g.merged_into) is distinct from
         (case when p_merged ? g.customer_id::text then 'merged' else 'retired' end, (p_merged->>g.customer_id::text)::bigint);
end $$;

-- Bulk path: every golden record from the graph at once (after rebuild).
-- Customers whose cluster no longer exists are retired.
create or replace procedure people.unify_all() language plpgsql as $$
begin
  insert into people.golden as g (customer_id, given, surname, birth_date, national_id, phone, email, phones, emails, records, systems, status, split_from)
  select x.cluster_id, x.given, x.surname, x.birth_date, x.national_id, x.phone, x.email, x.phones, x.emails, x.records, x.systems, 'active', null::bigint
    from (with m as (
    select r.cluster_id, r.seq, u.*
      from people.records r
      join l1.person u on u.system = r.system and u.source_key = r.source_key
     where true)
  select m.cluster_id,
         (array_agg(m.given order by array_position(array['register', 'insurer', 'clinic']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.given)::text), '') is not null))[1]::text as given,
         (array_agg(m.surname order by array_position(array['register', 'insurer', 'clinic']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.surname)::text), '') is not null))[1]::text as surname,
         (mode() within group (order by m.birth_date) filter (where nullif(btrim((m.birth_date)::text), '') is not null))::date as birth_date,
         (array_agg(m.national_id order by array_position(array['register', 'insurer']::text[], m.system) nulls last, m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.national_id)::text), '') is not null))[1]::text as national_id,
         (array_agg(m.phone order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.phone)::text), '') is not null))[1]::text as phone,
         (array_agg(m.email order by m.source_ts_ms desc nulls last, m.created_ts_ms nulls last, m.system, m.source_key) filter (where nullif(btrim((m.email)::text), '') is not null))[1]::text as email,
         coalesce(array_agg(distinct nullif(btrim((m.phone)::text), '') order by nullif(btrim((m.phone)::text), '')) filter (where nullif(btrim((m.phone)::text), '') is not null), '{}') as phones,
         coalesce(array_agg(distinct nullif(btrim((m.email)::text), '') order by nullif(btrim((m.email)::text), '')) filter (where nullif(btrim((m.email)::text), '') is not null), '{}') as emails,
         count(*)::int as records,
         array_agg(distinct m.system order by m.system) as systems
    from m
   group by m.cluster_id) x
  on conflict (customer_id) do update
     set given = excluded.given, surname = excluded.surname, birth_date = excluded.birth_date, national_id = excluded.national_id, phone = excluded.phone, email = excluded.email, phones = excluded.phones, emails = excluded.emails, records = excluded.records, systems = excluded.systems,
         status = 'active', merged_into = null, updated_at = now(),
         -- a customer active again (its oldest record leads a cluster again)
         split_from = case when g.status = 'active' then g.split_from else excluded.split_from end
   where (g.given, g.surname, g.birth_date, g.national_id, g.phone, g.email, g.phones, g.emails, g.records, g.systems, g.status)
         is distinct from
         (excluded.given, excluded.surname, excluded.birth_date, excluded.national_id, excluded.phone, excluded.email, excluded.phones, excluded.emails, excluded.records, excluded.systems, 'active');
  update people.golden g
     set status = 'retired', updated_at = now()
   where g.status = 'active'
     and not exists (select 1 from people.records r where r.cluster_id = g.customer_id);
  analyze people.golden;
end $$;

-- L2 unify step: the golden records of the clusters the link step touched.
create or replace procedure people.unify_person(inout ev jsonb) language plpgsql as $$
declare
  v_id jsonb := ev->'identity';
begin
  if v_id is null or jsonb_typeof(v_id->'clusters') <> 'array' then
    raise exception '%: the event has no `identity`; an identity_link step must come first', 'people.unify_person'
      using errcode = '22023';
  end if;
  perform people.unify(
    array(select jsonb_array_elements_text(v_id->'clusters')::bigint),
    coalesce(v_id->'merged', '{}'), coalesce(v_id->'split', '{}'));
end $$;
