-- pgchain render: l1.cleanse_insurer_holder (template l1_cleanse)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

-- Phonetic keys: PostgreSQL's fuzzystrmatch.
create extension if not exists fuzzystrmatch;
create schema if not exists l1;

create table if not exists l1.person (
  system       text not null,
  source_key   text not null,
  primary key (system, source_key)
);
alter table l1.person add column if not exists given text;
alter table l1.person add column if not exists given_dmetaphone text;
alter table l1.person add column if not exists surname text;
alter table l1.person add column if not exists surname_dmetaphone text;
alter table l1.person add column if not exists surname_soundex text;
alter table l1.person add column if not exists full_name text;
alter table l1.person add column if not exists birth_date date;
alter table l1.person add column if not exists street text;
alter table l1.person add column if not exists postcode text;
alter table l1.person add column if not exists phone text;
alter table l1.person add column if not exists phone_kind text;
alter table l1.person add column if not exists phone_identifies boolean;
alter table l1.person add column if not exists email text;
alter table l1.person add column if not exists national_id text;
alter table l1.person add column if not exists source_ts_ms bigint;
alter table l1.person add column if not exists created_ts_ms bigint;
alter table l1.person add column if not exists updated_at timestamptz not null default now();

-- Every source of the union must declare an attribute with one type.
do $$
declare
  v record;
begin
  for v in
    select x.attribute, x.declared, format_type(c.atttypid, c.atttypmod) as actual
      from (values
        ('given', 'name', 'text'),
        ('surname', 'name', 'text'),
        ('full_name', 'name', 'text'),
        ('birth_date', 'date', 'date'),
        ('street', 'address', 'text'),
        ('postcode', 'postcode', 'text'),
        ('phone', 'phone', 'text'),
        ('email', 'email', 'text'),
        ('national_id', 'digits', 'text')
      ) x(attribute, declared, column_type)
      left join pg_attribute c
        on c.attrelid = format('%I.%I', 'l1', 'person')::regclass
       and c.attname = x.attribute and not c.attisdropped
     where format_type(c.atttypid, c.atttypmod) is distinct from x.column_type
  loop
    raise exception '%: attribute % is declared type % here, but the union has it as %',
      'l1.cleanse_insurer_holder', v.attribute, v.declared, v.actual
      using errcode = '42804', hint = 'every source of the union declares the same attributes';
  end loop;
end $$;

-- L1: the cleansed record of one insurer row in l1.person.
create or replace procedure l1.cleanse_insurer_holder(inout ev jsonb) language plpgsql as $$
declare
  v_ts    bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row   jsonb  := coalesce(ev->'after', ev->'before');
  v_key   text   := concat_ws(',', ev->'key'->>'HOLDER_ID');
  v_1 text;  -- given
  v_2 text;  -- surname
  v_3 text;  -- full_name
  v_4 date;  -- birth_date
  v_5 text;  -- street
  v_6 text;  -- postcode
  v_7 text;  -- phone
  v_8 text;  -- email
  v_9 text;  -- national_id
begin
  -- GUARD: a truncate of the source removes its rows from the union.
  if ev->>'op' = 't' then
    delete from l1.person where system = 'insurer';
    ev := ev || jsonb_build_object('record', jsonb_build_object(
      'table', 'l1.person', 'system', 'insurer', 'truncated', true));
    return;
  end if;
  ev := ev || jsonb_build_object('record', jsonb_build_object(
    'table', 'l1.person', 'system', 'insurer', 'source_key', v_key));
  if ev->>'op' = 'd' then
    delete from l1.person u
     where u.system = 'insurer' and u.source_key = v_key
       and (u.source_ts_ms is null or v_ts is null or u.source_ts_ms <= v_ts);
    return;
  end if;
  v_row := ev->'after';
  v_1 := pgchain.normalize_name(v_row->>'GIVEN_NAME', false);
  v_2 := pgchain.normalize_name(v_row->>'FAMILY_NAME', false);
  v_3 := pgchain.normalize_name(case when v_1 is not null and v_2 is not null then concat_ws(' ', v_1, v_2) end, false);
  v_4 := pgchain.normalize_birth_date(v_row->>'BIRTH_DATE');
  v_5 := pgchain.normalize_address(v_row->>'ADDRESS');
  v_6 := pgchain.normalize_postcode(v_row->>'POSTCODE');
  v_7 := pgchain.normalize_phone(v_row->>'PHONE');
  v_8 := pgchain.normalize_email(v_row->>'EMAIL');
  v_9 := pgchain.normalize_digits(v_row->>'NATIONAL_ID');
  insert into l1.person as u
    (system, source_key, given, given_dmetaphone, surname, surname_dmetaphone, surname_soundex, full_name, birth_date, street, postcode, phone, phone_kind, phone_identifies, email, national_id, source_ts_ms, created_ts_ms, updated_at)
  values (
    'insurer', v_key,
    v_1, nullif(dmetaphone(v_1), ''),
    v_2, nullif(dmetaphone(v_2), ''), nullif(soundex(v_2), ''),
    v_3,
    v_4,
    v_5,
    v_6,
    v_7, pgchain.phone_kind(v_7), pgchain.phone_identifies_person(v_7),
    v_8,
    v_9,
    v_ts, v_ts, now())
  on conflict (system, source_key) do update
     set (source_ts_ms, given, given_dmetaphone, surname, surname_dmetaphone, surname_soundex, full_name, birth_date, street, postcode, phone, phone_kind, phone_identifies, email, national_id, created_ts_ms, updated_at)
       = (excluded.source_ts_ms, excluded.given, excluded.given_dmetaphone, excluded.surname, excluded.surname_dmetaphone, excluded.surname_soundex, excluded.full_name, excluded.birth_date, excluded.street, excluded.postcode, excluded.phone, excluded.phone_kind, excluded.phone_identifies, excluded.email, excluded.national_id, least(u.created_ts_ms, excluded.created_ts_ms), now())
   where u.source_ts_ms is null or excluded.source_ts_ms is null or u.source_ts_ms <= excluded.source_ts_ms;
end $$;
