-- pgchain render: l1.cleanse_crm_contact (template l1_cleanse)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

-- Phonetic keys: PostgreSQL's fuzzystrmatch.
create extension if not exists fuzzystrmatch;
create schema if not exists l1;

create table if not exists l1.member_union (
  system       text not null,
  source_key   text not null,
  primary key (system, source_key)
);
alter table l1.member_union add column if not exists name text;
alter table l1.member_union add column if not exists name_soundex text;
alter table l1.member_union add column if not exists phone text;
alter table l1.member_union add column if not exists phone_kind text;
alter table l1.member_union add column if not exists phone_identifies boolean;
alter table l1.member_union add column if not exists email text;
alter table l1.member_union add column if not exists birth_date date;
alter table l1.member_union add column if not exists address text;
alter table l1.member_union add column if not exists source_ts_ms bigint;
alter table l1.member_union add column if not exists created_ts_ms bigint;
alter table l1.member_union add column if not exists updated_at timestamptz not null default now();

-- Every source of the union must declare an attribute with one type.
do $$
declare
  v record;
begin
  for v in
    select x.attribute, x.declared, format_type(c.atttypid, c.atttypmod) as actual
      from (values
        ('name', 'name', 'text'),
        ('phone', 'phone', 'text'),
        ('email', 'email', 'text'),
        ('birth_date', 'date', 'date'),
        ('address', 'address', 'text')
      ) x(attribute, declared, column_type)
      left join pg_attribute c
        on c.attrelid = format('%I.%I', 'l1', 'member_union')::regclass
       and c.attname = x.attribute and not c.attisdropped
     where format_type(c.atttypid, c.atttypmod) is distinct from x.column_type
  loop
    raise exception '%: attribute % is declared type % here, but the union has it as %',
      'l1.cleanse_crm_contact', v.attribute, v.declared, v.actual
      using errcode = '42804', hint = 'every source of the union declares the same attributes';
  end loop;
end $$;

-- L1: the cleansed record of one crm row in l1.member_union.
create or replace procedure l1.cleanse_crm_contact(inout ev jsonb) language plpgsql as $$
declare
  v_ts    bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row   jsonb  := coalesce(ev->'after', ev->'before');
  v_key   text   := concat_ws(',', ev->'key'->>'CONTACT_ID');
  v_1 text;  -- name
  v_2 text;  -- phone
  v_3 text;  -- email
  v_4 date;  -- birth_date
  v_5 text;  -- address
begin
  -- GUARD: a truncate of the source removes its rows from the union.
  if ev->>'op' = 't' then
    delete from l1.member_union where system = 'crm';
    ev := ev || jsonb_build_object('record', jsonb_build_object(
      'table', 'l1.member_union', 'system', 'crm', 'truncated', true));
    return;
  end if;
  ev := ev || jsonb_build_object('record', jsonb_build_object(
    'table', 'l1.member_union', 'system', 'crm', 'source_key', v_key));
  if ev->>'op' = 'd' then
    delete from l1.member_union u
     where u.system = 'crm' and u.source_key = v_key
       and (u.source_ts_ms is null or v_ts is null or u.source_ts_ms <= v_ts);
    return;
  end if;
  v_row := ev->'after';
  v_1 := pgchain.normalize_name(case when nullif(btrim(v_row->>'LAST_NAME'), '') is not null and nullif(btrim(v_row->>'FIRST_NAME'), '') is not null then concat_ws(' ', v_row->>'LAST_NAME', v_row->>'FIRST_NAME') end, false);
  v_2 := pgchain.normalize_phone(v_row->>'PHONE');
  v_3 := pgchain.normalize_email(v_row->>'EMAIL');
  v_4 := null;
  v_5 := null;
  insert into l1.member_union as u
    (system, source_key, name, name_soundex, phone, phone_kind, phone_identifies, email, birth_date, address, source_ts_ms, created_ts_ms, updated_at)
  values (
    'crm', v_key,
    v_1, nullif(soundex(v_1), ''),
    v_2, pgchain.phone_kind(v_2), pgchain.phone_identifies_person(v_2),
    v_3,
    v_4,
    v_5,
    v_ts, v_ts, now())
  on conflict (system, source_key) do update
     set (source_ts_ms, name, name_soundex, phone, phone_kind, phone_identifies, email, birth_date, address, created_ts_ms, updated_at)
       = (excluded.source_ts_ms, excluded.name, excluded.name_soundex, excluded.phone, excluded.phone_kind, excluded.phone_identifies, excluded.email, excluded.birth_date, excluded.address, least(u.created_ts_ms, excluded.created_ts_ms), now())
   where u.source_ts_ms is null or excluded.source_ts_ms is null or u.source_ts_ms <= excluded.source_ts_ms;
end $$;
