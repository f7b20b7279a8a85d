-- pgchain render: l0.copy_crm_contact (template l0_upsert)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l0;

create table if not exists l0.crm_contact (
  contact_id bigint,
  first_name text,
  last_name text,
  phone text,
  email text,
  _source_ts_ms    bigint,
  _source_position text,
  _deleted         boolean not null default false,
  _applied_at      timestamptz not null default now(),
  primary key (contact_id)
);
alter table l0.crm_contact add column if not exists contact_id bigint;
alter table l0.crm_contact add column if not exists first_name text;
alter table l0.crm_contact add column if not exists last_name text;
alter table l0.crm_contact add column if not exists phone text;
alter table l0.crm_contact add column if not exists email text;
alter table l0.crm_contact add column if not exists _source_ts_ms bigint;
alter table l0.crm_contact add column if not exists _source_position text;
alter table l0.crm_contact add column if not exists _deleted boolean not null default false;
alter table l0.crm_contact add column if not exists _applied_at timestamptz not null default now();

-- L0 copy of one source row per event. An event older than the stored row
-- (stale_guard: position) changes nothing; deletes are hard.
-- A column the event lists in `unchanged` keeps its stored value.
create or replace procedure l0.copy_crm_contact(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_pos text   := ev->'source'->>'position';
begin
  -- GUARD: a truncate empties the copy.
  if ev->>'op' = 't' then
    delete from l0.crm_contact;
    return;
  end if;

  -- GUARD: a delete removes the row unless the stored row is newer.
  if ev->>'op' = 'd' then
    delete from l0.crm_contact t
     where contact_id = (ev->'key'->>'CONTACT_ID')::bigint
       and coalesce(pgchain.position_at_or_after(v_pos, t._source_position), true);
    return;
  end if;

  insert into l0.crm_contact as t (contact_id, first_name, last_name, phone, email, _source_ts_ms, _source_position, _deleted)
  values (
    (ev->'after'->>'CONTACT_ID')::bigint,
    (ev->'after'->>'FIRST_NAME')::text,
    (ev->'after'->>'LAST_NAME')::text,
    (ev->'after'->>'PHONE')::text,
    (ev->'after'->>'EMAIL')::text,
    v_ts, v_pos, false)
  on conflict (contact_id) do update
     set first_name = case when coalesce(ev->'unchanged' ? 'FIRST_NAME', false) then t.first_name else excluded.first_name end,
         last_name = case when coalesce(ev->'unchanged' ? 'LAST_NAME', false) then t.last_name else excluded.last_name end,
         phone = case when coalesce(ev->'unchanged' ? 'PHONE', false) then t.phone else excluded.phone end,
         email = case when coalesce(ev->'unchanged' ? 'EMAIL', false) then t.email else excluded.email end,
         _source_ts_ms = excluded._source_ts_ms,
         _source_position = excluded._source_position,
         _deleted = false,
         _applied_at = now()
   where coalesce(pgchain.position_at_or_after(v_pos, t._source_position), true);
end $$;
