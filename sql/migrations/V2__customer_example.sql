-- The customer example: raw copies (L0) of three source tables and the
-- cleansed member union (L1). Hand-written for now; each procedure follows
-- the step contract: one `inout ev jsonb`.

create schema if not exists l0;
create schema if not exists l1;

create table if not exists l0.sales_customer (
  id bigint primary key, name text, phone text, email text,
  source_ts_ms bigint, applied_at timestamptz not null default now()
);
create table if not exists l0.options_member (
  member_no text primary key, full_name text, mobile text, email_addr text,
  source_ts_ms bigint, applied_at timestamptz not null default now()
);
create table if not exists l0.crm_contact (
  contact_id bigint primary key, first_name text, last_name text, phone text, email text,
  source_ts_ms bigint, applied_at timestamptz not null default now()
);

-- One row per source record, cleansed, from every system.
create table if not exists l1.member_union (
  system       text   not null,
  source_key   text   not null,
  name         text,
  phone        text,
  email        text,
  source_ts_ms bigint,
  primary key (system, source_key)
);

-- Korean phone numbers to E.164 (+8210…); anything else keeps its digits.
create or replace function l1.normalize_phone(p text) returns text
language sql immutable as $$
  select case
    when d is null or d = '' then null
    when d like '82%' then '+' || d
    when d like '0%' then '+82' || substr(d, 2)
    else '+' || d
  end
  from (select regexp_replace(p, '\D', '', 'g') as d) x
$$;

create or replace function l1.normalize_email(p text) returns text
language sql immutable as $$
  select case when e ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then e end
  from (select lower(btrim(p)) as e) x
$$;

create or replace function l1.normalize_name(p text) returns text
language sql immutable as $$
  select nullif(regexp_replace(btrim(p), '\s+', ' ', 'g'), '')
$$;

-- L0: raw copy of sales.public.customer. Older events never overwrite newer rows.
create or replace procedure l0.copy_sales_customer(inout ev jsonb) language plpgsql as $$
declare
  v_ts bigint := (ev->'source'->>'ts_ms')::bigint;
begin
  -- GUARD: truncate empties the copy.
  if ev->>'op' = 't' then
    delete from l0.sales_customer;
    return;
  end if;
  if ev->>'op' = 'd' then
    delete from l0.sales_customer where id = (ev->'key'->>'id')::bigint;
    return;
  end if;
  insert into l0.sales_customer as t (id, name, phone, email, source_ts_ms)
  select r.id, r.name, r.phone, r.email, v_ts
    from jsonb_populate_record(null::l0.sales_customer, ev->'after') r
  on conflict (id) do update
     set name = excluded.name, phone = excluded.phone, email = excluded.email,
         source_ts_ms = excluded.source_ts_ms, applied_at = now()
   where t.source_ts_ms is null or excluded.source_ts_ms >= t.source_ts_ms;
end $$;

create or replace procedure l0.copy_options_member(inout ev jsonb) language plpgsql as $$
declare
  v_ts bigint := (ev->'source'->>'ts_ms')::bigint;
begin
  if ev->>'op' = 't' then
    delete from l0.options_member;
    return;
  end if;
  if ev->>'op' = 'd' then
    delete from l0.options_member where member_no = ev->'key'->>'member_no';
    return;
  end if;
  insert into l0.options_member as t (member_no, full_name, mobile, email_addr, source_ts_ms)
  select r.member_no, r.full_name, r.mobile, r.email_addr, v_ts
    from jsonb_populate_record(null::l0.options_member, ev->'after') r
  on conflict (member_no) do update
     set full_name = excluded.full_name, mobile = excluded.mobile, email_addr = excluded.email_addr,
         source_ts_ms = excluded.source_ts_ms, applied_at = now()
   where t.source_ts_ms is null or excluded.source_ts_ms >= t.source_ts_ms;
end $$;

-- GoldenGate writes Oracle's upper-case column names.
create or replace procedure l0.copy_crm_contact(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row jsonb := ev->'after';
begin
  if ev->>'op' = 't' then
    delete from l0.crm_contact;
    return;
  end if;
  if ev->>'op' = 'd' then
    delete from l0.crm_contact where contact_id = (ev->'key'->>'CONTACT_ID')::bigint;
    return;
  end if;
  insert into l0.crm_contact as t (contact_id, first_name, last_name, phone, email, source_ts_ms)
  values ((v_row->>'CONTACT_ID')::bigint, v_row->>'FIRST_NAME', v_row->>'LAST_NAME',
          v_row->>'PHONE', v_row->>'EMAIL', v_ts)
  on conflict (contact_id) do update
     set first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone,
         email = excluded.email, source_ts_ms = excluded.source_ts_ms, applied_at = now()
   where t.source_ts_ms is null or excluded.source_ts_ms >= t.source_ts_ms;
end $$;

-- L1: the cleansed record of one source row in the union; a delete removes it.
create or replace procedure l1.upsert_member(
  p_system text, p_key text, p_op text, p_name text, p_phone text, p_email text, p_ts bigint
) language plpgsql as $$
begin
  if p_op = 't' then
    delete from l1.member_union where system = p_system;
    return;
  end if;
  if p_op = 'd' then
    delete from l1.member_union where system = p_system and source_key = p_key;
    return;
  end if;
  insert into l1.member_union as u (system, source_key, name, phone, email, source_ts_ms)
  values (p_system, p_key, l1.normalize_name(p_name), l1.normalize_phone(p_phone),
          l1.normalize_email(p_email), p_ts)
  on conflict (system, source_key) do update
     set name = excluded.name, phone = excluded.phone, email = excluded.email,
         source_ts_ms = excluded.source_ts_ms
   where u.source_ts_ms is null or excluded.source_ts_ms >= u.source_ts_ms;
end $$;

create or replace procedure l1.cleanse_sales_customer(inout ev jsonb) language plpgsql as $$
begin
  call l1.upsert_member('sales', ev->'key'->>'id', ev->>'op', ev->'after'->>'name',
                        ev->'after'->>'phone', ev->'after'->>'email', (ev->'source'->>'ts_ms')::bigint);
end $$;

create or replace procedure l1.cleanse_options_member(inout ev jsonb) language plpgsql as $$
begin
  call l1.upsert_member('options', ev->'key'->>'member_no', ev->>'op', ev->'after'->>'full_name',
                        ev->'after'->>'mobile', ev->'after'->>'email_addr', (ev->'source'->>'ts_ms')::bigint);
end $$;

create or replace procedure l1.cleanse_crm_contact(inout ev jsonb) language plpgsql as $$
begin
  call l1.upsert_member('crm', ev->'key'->>'CONTACT_ID', ev->>'op',
                        concat_ws(' ', ev->'after'->>'LAST_NAME', ev->'after'->>'FIRST_NAME'),
                        ev->'after'->>'PHONE', ev->'after'->>'EMAIL', (ev->'source'->>'ts_ms')::bigint);
end $$;
