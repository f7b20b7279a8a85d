-- pgchain render: l0.copy_sales_customer (template l0_upsert)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l0;

create table if not exists l0.sales_customer (
  id bigint,
  name text,
  phone text,
  email text,
  _source_ts_ms    bigint,
  _source_position text,
  _deleted         boolean not null default false,
  _applied_at      timestamptz not null default now(),
  primary key (id)
);
alter table l0.sales_customer add column if not exists id bigint;
alter table l0.sales_customer add column if not exists name text;
alter table l0.sales_customer add column if not exists phone text;
alter table l0.sales_customer add column if not exists email text;
alter table l0.sales_customer add column if not exists _source_ts_ms bigint;
alter table l0.sales_customer add column if not exists _source_position text;
alter table l0.sales_customer add column if not exists _deleted boolean not null default false;
alter table l0.sales_customer add column if not exists _applied_at timestamptz not null default now();

-- L0 copy of one source row per event. An event older than the stored row
-- (stale_guard: ts_ms) changes nothing; deletes are hard.
-- A column the event lists in `unchanged` keeps its stored value.
create or replace procedure l0.copy_sales_customer(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_pos text   := ev->'source'->>'position';
begin
  -- GUARD: a truncate empties the copy.
  if ev->>'op' = 't' then
    delete from l0.sales_customer;
    return;
  end if;

  -- GUARD: a delete removes the row unless the stored row is newer.
  if ev->>'op' = 'd' then
    delete from l0.sales_customer t
     where id = (ev->'key'->>'id')::bigint
       and (t._source_ts_ms is null or v_ts is null or t._source_ts_ms <= v_ts);
    return;
  end if;

  insert into l0.sales_customer as t (id, name, phone, email, _source_ts_ms, _source_position, _deleted)
  values (
    (ev->'after'->>'id')::bigint,
    (ev->'after'->>'name')::text,
    (ev->'after'->>'phone')::text,
    (ev->'after'->>'email')::text,
    v_ts, v_pos, false)
  on conflict (id) do update
     set name = case when coalesce(ev->'unchanged' ? 'name', false) then t.name else excluded.name end,
         phone = case when coalesce(ev->'unchanged' ? 'phone', false) then t.phone else excluded.phone end,
         email = case when coalesce(ev->'unchanged' ? 'email', false) then t.email else excluded.email end,
         _source_ts_ms = excluded._source_ts_ms,
         _source_position = excluded._source_position,
         _deleted = false,
         _applied_at = now()
   where (t._source_ts_ms is null or v_ts is null or t._source_ts_ms <= v_ts);
end $$;
