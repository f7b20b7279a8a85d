-- pgchain render: campaign.consent (template consolidate)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists campaign;

create table if not exists campaign.target_member (
  member_id bigint,
  _updated_at timestamptz not null default now(),
  primary key (member_id)
);
alter table campaign.target_member add column if not exists sms_ok boolean;
alter table campaign.target_member add column if not exists email_ok boolean;
alter table campaign.target_member add column if not exists push_ok boolean;
alter table campaign.target_member add column if not exists _consent_ts_ms bigint;

-- Side source `consent` of campaign.target_member.
-- A row of this source waits for its base row: until that exists, the event
-- fails with SQLSTATE PGW01 and DETAIL `member:<key>`: pgchain
-- retries it, then parks it until the base row provides that key.
create or replace procedure campaign.consent(inout ev jsonb) language plpgsql as $$
declare
  v_ts  bigint := (ev->'source'->>'ts_ms')::bigint;
  v_row jsonb  := ev->'after';
begin
  -- GUARD: a truncate or delete of a side row clears its columns.
  if ev->>'op' in ('t', 'd') then
    update campaign.target_member t
       set sms_ok = null, email_ok = null, push_ok = null, _consent_ts_ms = v_ts, _updated_at = now()
     where (ev->>'op' = 't' or (t.member_id = (ev->'key'->>'member_id')::bigint))
       and (t._consent_ts_ms is null or v_ts is null or t._consent_ts_ms <= v_ts);
    return;
  end if;
  update campaign.target_member t
     set sms_ok = (v_row->>'sms_ok')::boolean,
         email_ok = (v_row->>'email_ok')::boolean,
         push_ok = (v_row->>'push_ok')::boolean,
         _consent_ts_ms = v_ts,
         _updated_at = now()
   where t.member_id = (v_row->>'member_id')::bigint
     and (t._consent_ts_ms is null or v_ts is null or t._consent_ts_ms <= v_ts);
  if found then
    return;
  end if;
  -- GUARD: no base row yet (a newer side row is not an error: nothing to do).
  -- The key is in DETAIL so it can be awaited.
  if not exists (select 1 from campaign.target_member t where t.member_id = (v_row->>'member_id')::bigint) then
    raise exception '%: no % row yet for this % row', 'campaign.target_member', 'member', 'consent'
      using errcode = 'PGW01',
            detail = 'member' || ':' || concat_ws(',', v_row->>'member_id');
  end if;
end $$;
