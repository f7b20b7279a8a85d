-- pgchain render: campaign.member (template consolidate)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists campaign;

create table if not exists campaign.target_member (
  member_id bigint,
  _updated_at timestamptz not null default now(),
  primary key (member_id)
);
alter table campaign.target_member add column if not exists name text;
alter table campaign.target_member add column if not exists grade text;
alter table campaign.target_member add column if not exists phone text;
alter table campaign.target_member add column if not exists _member_ts_ms bigint;

-- Base source `member` of campaign.target_member.
create or replace procedure campaign.member(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row jsonb  := ev->'after';
begin
  -- GUARD: a truncate of the base empties the target.
  if ev->>'op' = 't' then
    delete from campaign.target_member;
    return;
  end if;
  if ev->>'op' = 'd' then
    delete from campaign.target_member t
     where t.member_id = (ev->'key'->>'member_id')::bigint
       and (t._member_ts_ms is null or v_ts is null or t._member_ts_ms <= v_ts);
    return;
  end if;
  insert into campaign.target_member as t (member_id, name, grade, phone, _member_ts_ms, _updated_at)
  values (
    (v_row->>'member_id')::bigint,
    (v_row->>'name')::text,
    (v_row->>'grade')::text,
    (v_row->>'phone')::text,
    v_ts, now())
  on conflict (member_id) do update
     set name = excluded.name,
         grade = excluded.grade,
         phone = excluded.phone,
         _member_ts_ms = excluded._member_ts_ms,
         _updated_at = now()
   where (t._member_ts_ms is null or v_ts is null or t._member_ts_ms <= v_ts);
  -- Side rows parked for this row are re-driven once this commits.
  perform pgchain.provide('member' || ':' || concat_ws(',', v_row->>'member_id'));
end $$;
