-- pgchain render: campaign.terms (template consolidate)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists campaign;

create table if not exists campaign.target_member (
  member_id bigint,
  _updated_at timestamptz not null default now(),
  primary key (member_id)
);
alter table campaign.target_member add column if not exists terms_version text;
alter table campaign.target_member add column if not exists marketing_terms boolean;
alter table campaign.target_member add column if not exists _terms_ts_ms bigint;

-- Side source `terms` of campaign.target_member.
-- A row of this source waits for its base row: until that exists, the event
-- fails with SQLSTATE PGW01 and DETAIL `member:<key>`: pgchain
-- retries it, then parks it until the base row provides that key.
create or replace procedure campaign.terms(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row jsonb  := ev->'after';
begin
  -- GUARD: a truncate or delete of a side row clears its columns.
  if ev->>'op' in ('t', 'd') then
    update campaign.target_member t
       set terms_version = null, marketing_terms = null, _terms_ts_ms = v_ts, _updated_at = now()
     where (ev->>'op' = 't' or (t.member_id = (ev->'key'->>'member_id')::bigint))
       and (t._terms_ts_ms is null or v_ts is null or t._terms_ts_ms <= v_ts);
    return;
  end if;
  update campaign.target_member t
     set terms_version = (v_row->>'terms_version')::text,
         marketing_terms = (v_row->>'marketing_terms')::boolean,
         _terms_ts_ms = v_ts,
         _updated_at = now()
   where t.member_id = (v_row->>'member_id')::bigint
     and (t._terms_ts_ms is null or v_ts is null or t._terms_ts_ms <= v_ts);
  if found then
    return;
  end if;
  -- GUARD: no base row yet (a newer side row is not an error: nothing to do).
  -- The key is in DETAIL so it can be awaited.
  if not exists (select 1 from campaign.target_member t where t.member_id = (v_row->>'member_id')::bigint) then
    raise exception '%: no % row yet for this % row', 'campaign.target_member', 'member', 'terms'
      using errcode = 'PGW01',
            detail = 'member' || ':' || concat_ws(',', v_row->>'member_id');
  end if;
end $$;
