-- pgchain render: l0.copy_options_member (template l0_upsert)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists l0;

create table if not exists l0.options_member (
  member_no text,
  full_name text,
  mobile text,
  email_addr text,
  _source_ts_ms    bigint,
  _source_position text,
  _deleted         boolean not null default false,
  _applied_at      timestamptz not null default now(),
  primary key (member_no)
);
alter table l0.options_member add column if not exists member_no text;
alter table l0.options_member add column if not exists full_name text;
alter table l0.options_member add column if not exists mobile text;
alter table l0.options_member add column if not exists email_addr text;
alter table l0.options_member add column if not exists _source_ts_ms bigint;
alter table l0.options_member add column if not exists _source_position text;
alter table l0.options_member add column if not exists _deleted boolean not null default false;
alter table l0.options_member add column if not exists _applied_at timestamptz not null default now();

-- L0 copy of one source row per event. An event older than the stored row
-- (stale_guard: ts_ms) changes nothing; deletes are hard.
-- A column the event lists in `unchanged` keeps its stored value.
create or replace procedure l0.copy_options_member(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_pos text   := ev->'source'->>'position';
begin
  -- GUARD: a truncate empties the copy.
  if ev->>'op' = 't' then
    delete from l0.options_member;
    return;
  end if;

  -- GUARD: a delete removes the row unless the stored row is newer.
  if ev->>'op' = 'd' then
    delete from l0.options_member t
     where member_no = (ev->'key'->>'member_no')::text
       and (t._source_ts_ms is null or v_ts is null or t._source_ts_ms <= v_ts);
    return;
  end if;

  -- GUARD: an update that changed the key (GoldenGate's primary-key update,
  -- pkUpdateHandling=update) moves the row: the one under the old key goes,
  -- unless it is newer than the event.
  if ev->>'op' = 'u'
     and ev->'before'->>'member_no' is not null
     and (ev->'before'->>'member_no' is distinct from ev->'key'->>'member_no') then
    delete from l0.options_member t
     where member_no = (ev->'before'->>'member_no')::text
       and (t._source_ts_ms is null or v_ts is null or t._source_ts_ms <= v_ts);
  end if;

  insert into l0.options_member as t (member_no, full_name, mobile, email_addr, _source_ts_ms, _source_position, _deleted)
  values (
    (ev->'after'->>'member_no')::text,
    (ev->'after'->>'full_name')::text,
    (ev->'after'->>'mobile')::text,
    (ev->'after'->>'email_addr')::text,
    v_ts, v_pos, false)
  on conflict (member_no) do update
     set full_name = case when coalesce(ev->'unchanged' ? 'full_name', false) then t.full_name else excluded.full_name end,
         mobile = case when coalesce(ev->'unchanged' ? 'mobile', false) then t.mobile else excluded.mobile end,
         email_addr = case when coalesce(ev->'unchanged' ? 'email_addr', false) then t.email_addr else excluded.email_addr end,
         _source_ts_ms = excluded._source_ts_ms,
         _source_position = excluded._source_position,
         _deleted = false,
         _applied_at = now()
   where (t._source_ts_ms is null or v_ts is null or t._source_ts_ms <= v_ts);
end $$;
