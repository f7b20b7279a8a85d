-- pgchain render: l1.cleanse_sales_customer (template l1_cleanse)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l1;

create table if not exists l1.member_union (
  system       text not null,
  source_key   text not null,
  primary key (system, source_key)
);
alter table l1.member_union add column if not exists name text;
alter table l1.member_union add column if not exists phone text;
alter table l1.member_union add column if not exists phone_kind text;
alter table l1.member_union add column if not exists phone_identifies boolean;
alter table l1.member_union add column if not exists email text;
alter table l1.member_union add column if not exists birth_date date;
alter table l1.member_union add column if not exists address text;
alter table l1.member_union add column if not exists address_key text;
alter table l1.member_union add column if not exists source_ts_ms bigint;
alter table l1.member_union add column if not exists updated_at timestamptz not null default now();

-- L1: the cleansed record of one sales row in l1.member_union.
create or replace procedure l1.cleanse_sales_customer(inout ev jsonb) language plpgsql as $$
declare
  v_ts    bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row   jsonb  := coalesce(ev->'after', ev->'before');
  v_key   text   := concat_ws(',', ev->'key'->>'id');
  v_phone text;
begin
  -- GUARD: a truncate of the source removes its rows from the union.
  if ev->>'op' = 't' then
    delete from l1.member_union where system = 'sales';
    ev := ev || jsonb_build_object('record', jsonb_build_object(
      'table', 'l1.member_union', 'system', 'sales', 'truncated', true));
    return;
  end if;
  ev := ev || jsonb_build_object('record', jsonb_build_object(
    'table', 'l1.member_union', 'system', 'sales', 'source_key', v_key));
  if ev->>'op' = 'd' then
    delete from l1.member_union u
     where u.system = 'sales' and u.source_key = v_key
       and (u.source_ts_ms is null or v_ts is null or u.source_ts_ms <= v_ts);
    return;
  end if;
  v_row := ev->'after';
  v_phone := pgchain.normalize_phone(v_row->>'phone');
  insert into l1.member_union as u
    (system, source_key, name, phone, phone_kind, phone_identifies, email, birth_date, address, address_key, source_ts_ms, updated_at)
  values (
    'sales', v_key,
    pgchain.normalize_name(v_row->>'name', false),
    v_phone, pgchain.phone_kind(v_phone), pgchain.phone_identifies_person(v_phone),
    pgchain.normalize_email(v_row->>'email'),
    pgchain.normalize_birth_date(null),
    pgchain.normalize_address(null),
    pgchain.normalize_address(null, null),
    v_ts, now())
  on conflict (system, source_key) do update
     set name = excluded.name, phone = excluded.phone, phone_kind = excluded.phone_kind,
         phone_identifies = excluded.phone_identifies, email = excluded.email,
         birth_date = excluded.birth_date, address = excluded.address,
         address_key = excluded.address_key, source_ts_ms = excluded.source_ts_ms, updated_at = now()
   where u.source_ts_ms is null or excluded.source_ts_ms is null or u.source_ts_ms <= excluded.source_ts_ms;
end $$;
