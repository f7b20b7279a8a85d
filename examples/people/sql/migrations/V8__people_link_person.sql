-- pgchain render: people.link_person (template identity_link)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists people;

-- Every record of the union the graph has seen; seq orders them by age.
create sequence if not exists people.record_seq;
-- Cluster ids (the customer id downstream): never reused.
create sequence if not exists people.cluster_ids;
create table if not exists people.records (
  seq        bigint primary key,
  system     text   not null,
  source_key text   not null,
  cluster_id bigint not null,
  unique (system, source_key)
);
create index if not exists records_cluster on people.records (cluster_id);
-- When the source first showed the record (the union's created column):
-- source order decides a cluster's oldest record and the order of edges.
do $add$ begin
  if not exists (select 1 from pg_attribute a where a.attrelid = format('%I.%I', 'people', 'records')::regclass and a.attname = 'created' and not a.attisdropped) then
    alter table people.records add column created bigint;
  end if;
end $add$;
-- The blocks of scored rules the record was in when last linked (lock ids).
do $add$ begin
  if not exists (select 1 from pg_attribute a where a.attrelid = format('%I.%I', 'people', 'records')::regclass and a.attname = 'blocks' and not a.attisdropped) then
    alter table people.records add column blocks int[] not null default '{}';
  end if;
end $add$;
-- Every record's permanent number (records.seq), never deleted: a cluster's
-- id is the number of its oldest record, so ids survive rebuild.
create table if not exists people.ids (
  system     text   not null,
  source_key text   not null,
  id         bigint not null unique,
  primary key (system, source_key)
);

-- Record ↔ key value edges. links is false for a generic value's edges and
-- for edges held back by the maximum cluster size (see review).
create table if not exists people.keys (
  rule  text    not null,
  value text    not null,
  seq   bigint  not null,
  links boolean not null default true,
  primary key (rule, value, seq)
);
create index if not exists keys_seq on people.keys (seq);
-- When the edge was made (by an event or by rebuild); edges from before
-- this column existed show the upgrade's time.
do $add$ begin
  if not exists (select 1 from pg_attribute a where a.attrelid = format('%I.%I', 'people', 'keys')::regclass and a.attname = 'made_at' and not a.attisdropped) then
    alter table people.keys add column made_at timestamptz not null default now();
  end if;
end $add$;

-- Key values that stopped linking: shared by more than max_clusters clusters.
create table if not exists people.generic (
  rule      text   not null,
  value     text   not null,
  clusters  int    not null,
  records   int    not null,
  marked_at timestamptz not null default now(),
  primary key (rule, value)
);

-- Merges, splits and rebuilds, with the record whose change caused them.
create table if not exists people.history (
  id         bigserial primary key,
  at         timestamptz not null default now(),
  kind       text   not null check (kind in ('merge', 'split', 'rebuild')),
  cluster_id bigint,
  clusters   bigint[] not null default '{}',
  system     text,
  source_key text
);
create index if not exists history_cluster on people.history (cluster_id);

-- Links refused because the merge would exceed max_cluster_size.
create table if not exists people.review (
  id         bigserial primary key,
  at         timestamptz not null default now(),
  reason     text   not null,
  system     text   not null,
  source_key text   not null,
  rule       text   not null,
  value      text   not null,
  clusters   bigint[] not null,
  size       int    not null
);

-- A steward's overrides on record pairs, with who and why, honoured per
-- event and by rebuild: must_link (linked by hand: a key value of its own,
-- rule `must_link`, value the override's id) and cannot_link (never in one
-- cluster: the constrained union holds any link that would join them). A
-- revoked override stays, with when.
create table if not exists people.overrides (
  id         bigserial primary key,
  kind       text not null,
  a_system   text not null,
  a_key      text not null,
  b_system   text not null,
  b_key      text not null,
  made_by    text not null,
  why        text not null,
  made_at    timestamptz not null default now(),
  revoked_at timestamptz,
  revoked_by text
);
-- Generic values a steward released after review: they link again and are
-- never made generic again, per event or by rebuild.
create table if not exists people.released (
  rule        text not null,
  value       text not null,
  released_by text not null,
  why         text not null,
  released_at timestamptz not null default now(),
  primary key (rule, value)
);
-- (an ALTER only where an earlier version left the table otherwise: a lock
-- the running chains would wait for, or meet in a deadlock, is not taken
-- for nothing)
do $kinds$
begin
  if not exists (select 1 from pg_constraint c
                  where c.conrelid = format('%I.%I', 'people', 'overrides')::regclass and c.conname = 'overrides_kind_check'
                    and pg_get_constraintdef(c.oid) like '%cannot_link%') then
    alter table people.overrides drop constraint if exists overrides_kind_check;
    alter table people.overrides add constraint overrides_kind_check check (kind in ('must_link', 'cannot_link'));
  end if;
end $kinds$;
-- Held links a steward released after review: the record links through
-- the value even beyond max_cluster_size (a cannot-link still holds).
create table if not exists people.released_holds (
  system      text not null,
  source_key  text not null,
  rule        text not null,
  value       text not null,
  released_by text not null,
  released_at timestamptz not null default now(),
  primary key (system, source_key, rule, value)
);
create index if not exists overrides_a on people.overrides (a_system, a_key) where revoked_at is null;
create index if not exists overrides_b on people.overrides (b_system, b_key) where revoked_at is null;

-- A graph from before permanent numbers: every record gets its number, the
-- oldest record of each cluster the cluster's id, so customer ids stay.
do $upgrade$
begin
  if exists (select 1 from people.records) and not exists (select 1 from people.ids) then
    update people.records r set created = u.created_ts_ms
      from l1.person u where u.system = r.system and u.source_key = r.source_key;
    create temp table identity_renumber as
    select o.seq as old, case when row_number() over (partition by o.cluster_id order by o.created nulls last, o.system, o.source_key) = 1
                              then o.cluster_id end as new
      from people.records o;
    update identity_renumber n set new = nextval('people.cluster_ids'::regclass) where n.new is null;
    insert into people.ids (system, source_key, id)
    select r.system, r.source_key, n.new from people.records r join identity_renumber n on n.old = r.seq;
    update people.keys k set seq = -n.new from identity_renumber n where k.seq = n.old;
    update people.keys k set seq = -k.seq where k.seq < 0;
    update people.records r set seq = -n.new from identity_renumber n where r.seq = n.old;
    update people.records r set seq = -r.seq where r.seq < 0;
    drop table identity_renumber;
  end if;
end $upgrade$;

-- Functions of earlier versions that link_record no longer calls.
drop function if exists people.reach(bigint);
drop function if exists people.lock_clusters(bigint);
drop function if exists people.mark_generic(text[], bigint[]);
drop function if exists people.join_clusters(bigint, text, text, boolean, bigint[]);
drop function if exists people.hold_oversize_links(bigint, text, text, bigint, text[], bigint[], bigint[], bigint[], bigint[], bigint[]);
drop function if exists people.surviving_ids(bigint[], bigint[], bigint[]);
drop function if exists people.recompute_clusters(bigint, text, text, boolean, boolean, bigint, text[], bigint[], bigint[], bigint[]);
drop function if exists people.components(bigint[], text, text);
drop function if exists people.drop_edges(bigint, text[], text[]);
drop function if exists people.add_edges(bigint, text[], text[]);
drop function if exists people.link_record(text, text);
-- Scored rules compare with fuzzystrmatch's levenshtein and pg_trgm's
-- similarity (both trusted extensions: no superuser needed).
create extension if not exists fuzzystrmatch;
create extension if not exists pg_trgm;
create index if not exists people_scored1_block1 on l1.person (birth_date);
create index if not exists people_scored1_block2 on l1.person (given_dmetaphone, postcode);
create index if not exists people_scored1_block3 on l1.person (street);
create index if not exists people_scored1_block4 on l1.person (given_dmetaphone, surname_dmetaphone);

-- The scored pairs of one union record: for each scored rule, the
-- candidates its blocks give whose score reaches the threshold, as key
-- values (both records, the smaller first) the two records bear. link_record
-- locks the record's blocks, as they are and as they were, first: a record
-- entering or leaving a block at once is waited for and compared as it
-- committed, so two records changed together never miss or keep a pair.
create or replace function people.pairs_of(p_system text, p_key text)
returns table(rule text, value text) language sql stable as $$
  select null::text, null::text where false
  union all
  select 'person', case when (a.system, a.source_key) < (b.system, b.source_key)
     then concat_ws(chr(31), a.system, a.source_key, b.system, b.source_key)
     else concat_ws(chr(31), b.system, b.source_key, a.system, a.source_key) end
    from l1.person a
   cross join lateral (
      select b.system, b.source_key from l1.person b
       where b.birth_date = a.birth_date and (b.system, b.source_key) <> (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.given_dmetaphone = a.given_dmetaphone and b.postcode = a.postcode and (b.system, b.source_key) <> (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.street = a.street and (b.system, b.source_key) <> (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.given_dmetaphone = a.given_dmetaphone and b.surname_dmetaphone = a.surname_dmetaphone and (b.system, b.source_key) <> (a.system, a.source_key)) c
    join l1.person b on b.system = c.system and b.source_key = c.source_key
   where a.system = p_system and a.source_key = p_key
     and ((case when nullif(btrim(a.national_id::text), '') is null or nullif(btrim(b.national_id::text), '') is null then 0 when nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '') then 12 else -14 end) + (case when nullif(btrim(a.given::text), '') is null or nullif(btrim(b.given::text), '') is null then 0 when nullif(btrim(a.given::text), '') = nullif(btrim(b.given::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and (nullif(btrim(b.surname::text), '') is not null or nullif(btrim(a.surname::text), '') is not null) then 4 when pgchain.same_given_name(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) then 3 when pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) >= 0.8 then 3 else -2 end) + (case when nullif(btrim(a.surname::text), '') is null or nullif(btrim(b.surname::text), '') is null then 0 when nullif(btrim(a.surname::text), '') = nullif(btrim(b.surname::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and (nullif(btrim(b.given::text), '') is not null or nullif(btrim(a.given::text), '') is not null) then 4 when pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.surname::text), '')) >= 0.85 then 3 else -3 end) + (case when nullif(btrim(a.birth_date::text), '') is null or nullif(btrim(b.birth_date::text), '') is null then 0 when nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '') then 7 when a.birth_date::date = pgchain.swap_day_month(b.birth_date::date) then 5 when pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) then 5 when levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2 then 0 else -9 end) + (case when nullif(btrim(a.street::text), '') is null or nullif(btrim(b.street::text), '') is null then 0 when nullif(btrim(a.street::text), '') = nullif(btrim(b.street::text), '') then 1 when similarity(nullif(btrim(a.street::text), ''), nullif(btrim(b.street::text), '')) >= 0.6 then 0.5 else -3 end) + (case when nullif(btrim(a.postcode::text), '') is null or nullif(btrim(b.postcode::text), '') is null then 0 when nullif(btrim(a.postcode::text), '') = nullif(btrim(b.postcode::text), '') then 1 when levenshtein(nullif(btrim(a.postcode::text), ''), nullif(btrim(b.postcode::text), '')) <= 1 then 0.5 else -3 end) + (case when nullif(btrim(a.phone::text), '') is null or nullif(btrim(b.phone::text), '') is null then 0 when nullif(btrim(a.phone::text), '') = nullif(btrim(b.phone::text), '') then 1 else -2 end) + (case when nullif(btrim(a.email::text), '') is null or nullif(btrim(b.email::text), '') is null then 0 when nullif(btrim(a.email::text), '') = nullif(btrim(b.email::text), '') then 8 else -6 end))::float8 >= 9
$$;

-- How two records compare under a scored rule: the score, the threshold,
-- and for each compared column both values and the level they meet
-- (`missing` when either is blank). Null when either record is gone.
create or replace function people.compare(p_rule text, a_system text, a_key text, b_system text, b_key text)
returns jsonb language sql stable as $$
  select case p_rule when '' then null::jsonb
    when 'person' then (
      select jsonb_build_object('score', ((case when nullif(btrim(a.national_id::text), '') is null or nullif(btrim(b.national_id::text), '') is null then 0 when nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '') then 12 else -14 end) + (case when nullif(btrim(a.given::text), '') is null or nullif(btrim(b.given::text), '') is null then 0 when nullif(btrim(a.given::text), '') = nullif(btrim(b.given::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and (nullif(btrim(b.surname::text), '') is not null or nullif(btrim(a.surname::text), '') is not null) then 4 when pgchain.same_given_name(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) then 3 when pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) >= 0.8 then 3 else -2 end) + (case when nullif(btrim(a.surname::text), '') is null or nullif(btrim(b.surname::text), '') is null then 0 when nullif(btrim(a.surname::text), '') = nullif(btrim(b.surname::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and (nullif(btrim(b.given::text), '') is not null or nullif(btrim(a.given::text), '') is not null) then 4 when pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.surname::text), '')) >= 0.85 then 3 else -3 end) + (case when nullif(btrim(a.birth_date::text), '') is null or nullif(btrim(b.birth_date::text), '') is null then 0 when nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '') then 7 when a.birth_date::date = pgchain.swap_day_month(b.birth_date::date) then 5 when pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) then 5 when levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2 then 0 else -9 end) + (case when nullif(btrim(a.street::text), '') is null or nullif(btrim(b.street::text), '') is null then 0 when nullif(btrim(a.street::text), '') = nullif(btrim(b.street::text), '') then 1 when similarity(nullif(btrim(a.street::text), ''), nullif(btrim(b.street::text), '')) >= 0.6 then 0.5 else -3 end) + (case when nullif(btrim(a.postcode::text), '') is null or nullif(btrim(b.postcode::text), '') is null then 0 when nullif(btrim(a.postcode::text), '') = nullif(btrim(b.postcode::text), '') then 1 when levenshtein(nullif(btrim(a.postcode::text), ''), nullif(btrim(b.postcode::text), '')) <= 1 then 0.5 else -3 end) + (case when nullif(btrim(a.phone::text), '') is null or nullif(btrim(b.phone::text), '') is null then 0 when nullif(btrim(a.phone::text), '') = nullif(btrim(b.phone::text), '') then 1 else -2 end) + (case when nullif(btrim(a.email::text), '') is null or nullif(btrim(b.email::text), '') is null then 0 when nullif(btrim(a.email::text), '') = nullif(btrim(b.email::text), '') then 8 else -6 end))::float8, 'threshold', 9, 'compared', jsonb_build_object(
               'national_id', jsonb_build_object('a', nullif(btrim(a.national_id::text), ''), 'b', nullif(btrim(b.national_id::text), ''), 'level', case when nullif(btrim(a.national_id::text), '') is null or nullif(btrim(b.national_id::text), '') is null then 'missing' when nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '') then 'exact' else 'else' end, 'weight', case when nullif(btrim(a.national_id::text), '') is null or nullif(btrim(b.national_id::text), '') is null then 0 when nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '') then 12 else -14 end),
               'given', jsonb_build_object('a', nullif(btrim(a.given::text), ''), 'b', nullif(btrim(b.given::text), ''), 'level', case when nullif(btrim(a.given::text), '') is null or nullif(btrim(b.given::text), '') is null then 'missing' when nullif(btrim(a.given::text), '') = nullif(btrim(b.given::text), '') then 'exact' when coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and (nullif(btrim(b.surname::text), '') is not null or nullif(btrim(a.surname::text), '') is not null) then 'swapped' when pgchain.same_given_name(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) then 'nickname' when pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) >= 0.8 then 'jaro_winkler' else 'else' end, 'weight', case when nullif(btrim(a.given::text), '') is null or nullif(btrim(b.given::text), '') is null then 0 when nullif(btrim(a.given::text), '') = nullif(btrim(b.given::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and (nullif(btrim(b.surname::text), '') is not null or nullif(btrim(a.surname::text), '') is not null) then 4 when pgchain.same_given_name(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) then 3 when pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) >= 0.8 then 3 else -2 end),
               'surname', jsonb_build_object('a', nullif(btrim(a.surname::text), ''), 'b', nullif(btrim(b.surname::text), ''), 'level', case when nullif(btrim(a.surname::text), '') is null or nullif(btrim(b.surname::text), '') is null then 'missing' when nullif(btrim(a.surname::text), '') = nullif(btrim(b.surname::text), '') then 'exact' when coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and (nullif(btrim(b.given::text), '') is not null or nullif(btrim(a.given::text), '') is not null) then 'swapped' when pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.surname::text), '')) >= 0.85 then 'jaro_winkler' else 'else' end, 'weight', case when nullif(btrim(a.surname::text), '') is null or nullif(btrim(b.surname::text), '') is null then 0 when nullif(btrim(a.surname::text), '') = nullif(btrim(b.surname::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and (nullif(btrim(b.given::text), '') is not null or nullif(btrim(a.given::text), '') is not null) then 4 when pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.surname::text), '')) >= 0.85 then 3 else -3 end),
               'birth_date', jsonb_build_object('a', nullif(btrim(a.birth_date::text), ''), 'b', nullif(btrim(b.birth_date::text), ''), 'level', case when nullif(btrim(a.birth_date::text), '') is null or nullif(btrim(b.birth_date::text), '') is null then 'missing' when nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '') then 'exact' when a.birth_date::date = pgchain.swap_day_month(b.birth_date::date) then 'day_month_swapped' when pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) then 'transposed' when levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2 then 'levenshtein' else 'else' end, 'weight', case when nullif(btrim(a.birth_date::text), '') is null or nullif(btrim(b.birth_date::text), '') is null then 0 when nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '') then 7 when a.birth_date::date = pgchain.swap_day_month(b.birth_date::date) then 5 when pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) then 5 when levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2 then 0 else -9 end),
               'street', jsonb_build_object('a', nullif(btrim(a.street::text), ''), 'b', nullif(btrim(b.street::text), ''), 'level', case when nullif(btrim(a.street::text), '') is null or nullif(btrim(b.street::text), '') is null then 'missing' when nullif(btrim(a.street::text), '') = nullif(btrim(b.street::text), '') then 'exact' when similarity(nullif(btrim(a.street::text), ''), nullif(btrim(b.street::text), '')) >= 0.6 then 'similarity' else 'else' end, 'weight', case when nullif(btrim(a.street::text), '') is null or nullif(btrim(b.street::text), '') is null then 0 when nullif(btrim(a.street::text), '') = nullif(btrim(b.street::text), '') then 1 when similarity(nullif(btrim(a.street::text), ''), nullif(btrim(b.street::text), '')) >= 0.6 then 0.5 else -3 end),
               'postcode', jsonb_build_object('a', nullif(btrim(a.postcode::text), ''), 'b', nullif(btrim(b.postcode::text), ''), 'level', case when nullif(btrim(a.postcode::text), '') is null or nullif(btrim(b.postcode::text), '') is null then 'missing' when nullif(btrim(a.postcode::text), '') = nullif(btrim(b.postcode::text), '') then 'exact' when levenshtein(nullif(btrim(a.postcode::text), ''), nullif(btrim(b.postcode::text), '')) <= 1 then 'levenshtein' else 'else' end, 'weight', case when nullif(btrim(a.postcode::text), '') is null or nullif(btrim(b.postcode::text), '') is null then 0 when nullif(btrim(a.postcode::text), '') = nullif(btrim(b.postcode::text), '') then 1 when levenshtein(nullif(btrim(a.postcode::text), ''), nullif(btrim(b.postcode::text), '')) <= 1 then 0.5 else -3 end),
               'phone', jsonb_build_object('a', nullif(btrim(a.phone::text), ''), 'b', nullif(btrim(b.phone::text), ''), 'level', case when nullif(btrim(a.phone::text), '') is null or nullif(btrim(b.phone::text), '') is null then 'missing' when nullif(btrim(a.phone::text), '') = nullif(btrim(b.phone::text), '') then 'exact' else 'else' end, 'weight', case when nullif(btrim(a.phone::text), '') is null or nullif(btrim(b.phone::text), '') is null then 0 when nullif(btrim(a.phone::text), '') = nullif(btrim(b.phone::text), '') then 1 else -2 end),
               'email', jsonb_build_object('a', nullif(btrim(a.email::text), ''), 'b', nullif(btrim(b.email::text), ''), 'level', case when nullif(btrim(a.email::text), '') is null or nullif(btrim(b.email::text), '') is null then 'missing' when nullif(btrim(a.email::text), '') = nullif(btrim(b.email::text), '') then 'exact' else 'else' end, 'weight', case when nullif(btrim(a.email::text), '') is null or nullif(btrim(b.email::text), '') is null then 0 when nullif(btrim(a.email::text), '') = nullif(btrim(b.email::text), '') then 8 else -6 end)))
        from l1.person a, l1.person b
       where a.system = a_system and a.source_key = a_key and b.system = b_system and b.source_key = b_key)
  end
$$;

-- Samples for estimating a scored rule's weights (pgchain identity
-- estimate): how up to p_n random pairs of records in different clusters
-- compare (two people, as far as the graph knows),
-- and how pairs that share a value of the exact rule p_truth compare (one
-- person), each as compare's answer.
create or replace function people.sample_pairs(p_rule text, p_n int) returns setof jsonb
language sql volatile as $$
  with s as (
    select x.system, x.source_key, row_number() over () as n
      from (select u.system, u.source_key from l1.person u order by random() limit 2 * p_n) x),
  half as (select count(*) / 2 as h from s)
  select people.compare(p_rule, a.system, a.source_key, b.system, b.source_key)
    from s a join s b on b.n = a.n + (select half.h from half)
    join people.records ra on ra.system = a.system and ra.source_key = a.source_key
    join people.records rb on rb.system = b.system and rb.source_key = b.source_key
   where a.n <= (select half.h from half) and ra.cluster_id <> rb.cluster_id
$$;
create or replace function people.truth_pairs(p_rule text, p_truth text, p_n int) returns setof jsonb
language sql volatile as $$
  select people.compare(p_rule, ra.system, ra.source_key, rb.system, rb.source_key)
    from (select k.value, k.seq from people.keys k where k.rule = p_truth and k.links order by random() limit 4 * p_n) a
    join people.keys b on b.rule = p_truth and b.value = a.value and b.seq > a.seq and b.links
    join people.records ra on ra.seq = a.seq
    join people.records rb on rb.seq = b.seq
   limit p_n
$$;

-- The key values of one union record.
create or replace function people.keys_of(p_system text, p_key text)
returns table(rule text, value text) language sql stable as $$
  select k.rule, k.value
    from l1.person u
   cross join lateral (values
      ('national_id', case when nullif(btrim((u.national_id)::text), '') is not null
        then nullif(btrim((u.national_id)::text), '') end),
      ('name_birth', case when nullif(btrim((u.full_name)::text), '') is not null and nullif(btrim((u.birth_date)::text), '') is not null
        then concat_ws(chr(31), nullif(btrim((u.full_name)::text), ''), nullif(btrim((u.birth_date)::text), '')) end),
      ('email', case when nullif(btrim((u.email)::text), '') is not null
        then nullif(btrim((u.email)::text), '') end)
    ) k(rule, value)
   where u.system = p_system and u.source_key = p_key and k.value is not null
  union all
  select p.rule, p.value from people.pairs_of(p_system, p_key) p
  union all
  select 'must_link', o.id::text
    from people.overrides o
   where o.kind = 'must_link' and o.revoked_at is null
     and ((o.a_system = p_system and o.a_key = p_key) or (o.b_system = p_system and o.b_key = p_key))
     and exists (select 1 from l1.person u where u.system = p_system and u.source_key = p_key)
$$;

-- max_clusters of a rule (null: no limit).
create or replace function people.max_clusters(p_rule text) returns int
language sql immutable as $$
  select case p_rule when '' then null::int
    when 'email' then 5
  end
$$;

-- Transaction-scoped advisory locks, always taken in one order: the blocks
-- of scored rules (phase 0: as the record is and as it was), key values
-- (phase 1), clusters (phase 2), each by id. A lock that sorts below
-- one this transaction already holds (a later event of a batch) is only
-- tried: waiting for it could deadlock, so the transaction is retried.
create or replace function people.lock(p_phase int, p_ids int[]) returns void
language plpgsql as $$
declare
  v_guc   text   := 'pgchain.idlock_' || md5('people');
  v_class int    := hashtext('pgchain.identity.' || 'people' || '.' || p_phase);
  v_top   bigint := coalesce(nullif(current_setting(v_guc, true), '')::bigint, -1);
  v_id    int;
  v_ord   bigint;
begin
  for v_id in select distinct i from unnest(p_ids) i where i is not null order by 1 loop
    v_ord := p_phase::bigint * 4294967296 + v_id::bigint + 2147483648;
    if v_ord > v_top then
      perform pg_advisory_xact_lock(v_class, v_id);
      v_top := v_ord;
    elsif not pg_try_advisory_xact_lock(v_class, v_id) then
      raise exception '%: identity lock out of order (a batch touches a cluster another transaction holds); retrying', 'people'
        using errcode = '40001';
    end if;
  end loop;
  perform set_config(v_guc, v_top::text, true);
end $$;

create or replace function people.cluster_lock_id(p_cluster bigint) returns int
language sql immutable as $$ select (p_cluster % 2147483647)::int $$;

-- The rank of a rule in the order the constrained union takes edges:
-- a steward's must_link first, then the rules in the order YAML lists them.
create or replace function people.rule_rank(p_rule text) returns int
language sql immutable as $$
  select case p_rule when 'must_link' then 0
    when 'national_id' then 1
    when 'name_birth' then 2
    when 'email' then 3
    when 'person' then 4
  end
$$;

-- A record's permanent number: drawn once from cluster_ids and never
-- deleted, so a record deleted and inserted again gets its number back
-- and a cluster's id (its oldest record's number) survives rebuild.
create or replace function people.record_id(p_system text, p_key text) returns bigint
language plpgsql as $$
declare
  v_id bigint;
begin
  select i.id into v_id from people.ids i where i.system = p_system and i.source_key = p_key;
  if v_id is null then
    insert into people.ids (system, source_key, id)
    values (p_system, p_key, nextval('people.cluster_ids'::regclass))
    on conflict (system, source_key) do nothing
    returning id into v_id;
    if v_id is null then
      select i.id into v_id from people.ids i where i.system = p_system and i.source_key = p_key;
    end if;
  end if;
  return v_id;
end $$;

-- A candidate for generic: a value of a rule with max_clusters N that more
-- than N records bear (and no steward released).
create or replace function people.is_candidate(p_rule text, p_value text) returns boolean
language sql stable as $$
  select people.max_clusters(p_rule) is not null
     and not exists (select 1 from people.released x where x.rule = p_rule and x.value = p_value)
     and (select count(*) from (select 1 from people.keys b where b.rule = p_rule and b.value = p_value
                                  limit people.max_clusters(p_rule) + 1) x) > people.max_clusters(p_rule)
$$;

-- The base component of a record: the records it reaches through values
-- that are no candidate (the graph generic values are decided on).
create or replace function people.base_component(p_seq bigint) returns bigint[]
language sql stable as $$
  with recursive c(s) as (
    select p_seq
    union
    select b.seq
      from c
      join people.keys k on k.seq = c.s
      join people.keys b on b.rule = k.rule and b.value = k.value and b.seq <> c.s
     where not people.is_candidate(k.rule, k.value))
  select array_agg(c.s) from c
$$;

-- The base components a value's bearers fall into, counted up to p_stop + 1.
create or replace function people.spread(p_rule text, p_value text, p_stop int) returns int
language plpgsql stable as $$
declare
  v_seen  bigint[] := '{}';
  v_comps int := 0;
  v_seq   bigint;
begin
  for v_seq in select b.seq from people.keys b where b.rule = p_rule and b.value = p_value order by b.seq loop
    continue when v_seq = any(v_seen);
    v_seen := v_seen || people.base_component(v_seq);
    v_comps := v_comps + 1;
    exit when v_comps > p_stop;
  end loop;
  return v_comps;
end $$;

-- Generic: a candidate whose bearers fall into more than max_clusters base
-- components. The same rule per event and in rebuild, decided from the
-- records as they are: a value stops being generic when its bearers fall
-- back under the limit.
create or replace function people.is_generic(p_rule text, p_value text) returns boolean
language sql stable as $$
  select people.is_candidate(p_rule, p_value)
     and people.spread(p_rule, p_value, people.max_clusters(p_rule)) > people.max_clusters(p_rule)
$$;

-- The records p_seeds reach through values that are not generic (linking
-- or held): whole clusters and every cluster a held link points to.
create or replace function people.region(p_seeds bigint[]) returns bigint[]
language sql stable as $$
  with recursive c(s) as (
    select distinct x from unnest(p_seeds) x
    union
    select b.seq
      from c
      join people.keys k on k.seq = c.s
      join people.keys b on b.rule = k.rule and b.value = k.value and b.seq <> c.s
     where not exists (select 1 from people.generic g where g.rule = k.rule and g.value = k.value))
  select coalesce(array_agg(c.s order by c.s), '{}') from c
$$;

-- The region of p_seeds with the clusters of its records locked (phase 1),
-- in order; if one moved while this transaction waited, locks the new ones
-- too.
create or replace function people.lock_region(p_seeds bigint[]) returns bigint[]
language plpgsql as $$
declare
  v_locked   bigint[] := '{}';
  v_region   bigint[];
  v_clusters bigint[];
begin
  loop
    v_region := people.region(p_seeds);
    v_clusters := array(select distinct r.cluster_id from people.records r where r.seq = any(v_region) order by 1);
    exit when v_clusters <@ v_locked;
    perform people.lock(2, array(select people.cluster_lock_id(c) from unnest(v_clusters) c));
    v_locked := array(select distinct c from unnest(v_locked || v_clusters) c order by c);
  end loop;
  return v_region;
end $$;

-- Decides again whether each value (p_rules[i], p_values[i]) is generic;
-- a change is written to generic (with the base components counted, up to
-- max_clusters + 1) and a value that turns generic stops linking. Returns
-- the bearers of values that stopped being generic: the region widens by
-- them.
create or replace function people.settle_generic(p_rules text[], p_values text[]) returns bigint[]
language plpgsql as $$
declare
  v     record;
  v_was boolean;
  v_now boolean;
  v_widen bigint[] := '{}';
begin
  for v in
    select distinct x.rule, x.value from unnest(p_rules, p_values) x(rule, value)
     where people.max_clusters(x.rule) is not null order by 1, 2
  loop
    v_was := exists (select 1 from people.generic g where g.rule = v.rule and g.value = v.value);
    v_now := people.is_generic(v.rule, v.value);
    continue when v_now = v_was;
    -- a change: take the value's lock, then decide once more
    perform people.lock(1, array[hashtext(v.rule || chr(31) || v.value)]);
    v_was := exists (select 1 from people.generic g where g.rule = v.rule and g.value = v.value);
    v_now := people.is_generic(v.rule, v.value);
    continue when v_now = v_was;
    if v_now then
      insert into people.generic (rule, value, clusters, records)
      select v.rule, v.value, people.spread(v.rule, v.value, people.max_clusters(v.rule)), count(*)
        from people.keys b where b.rule = v.rule and b.value = v.value;
      update people.keys b set links = false where b.rule = v.rule and b.value = v.value and b.links;
    else
      delete from people.generic g where g.rule = v.rule and g.value = v.value;
      v_widen := v_widen || array(select b.seq from people.keys b where b.rule = v.rule and b.value = v.value);
    end if;
  end loop;
  return v_widen;
end $$;

-- Connected components of the records p_seqs (a region, so closed) through
-- values that are not generic. comp is the component's smallest number.
create or replace function people.components(p_seqs bigint[])
returns table(seq bigint, comp bigint) language plpgsql stable as $$
declare
  v_left bigint[] := p_seqs;
  v_seed bigint;
  v_comp bigint[];
begin
  loop
    select min(x) into v_seed from unnest(v_left) x;
    exit when v_seed is null;
    v_comp := people.region(array[v_seed]);
    return query select x, v_seed from unnest(v_comp) x;
    v_left := array(select x from unnest(v_left) x except select y from unnest(v_comp) y);
  end loop;
end $$;

-- Pairs of the records p_seqs that a scored rule's `conflicts` keep apart:
-- both have a value of a conflict column and no level but `else` holds (two
-- birth dates no typo explains). Honoured as cannot-links the data makes.
create or replace function people.conflicting(p_seqs bigint[]) returns table(a_seq bigint, b_seq bigint)
language sql stable as $$
  select ra.seq, rb.seq
    from people.records ra
    join l1.person a on a.system = ra.system and a.source_key = ra.source_key
    join people.records rb on rb.seq = any(p_seqs) and rb.seq > ra.seq
    join l1.person b on b.system = rb.system and b.source_key = rb.source_key
   where ((nullif(btrim(a.national_id::text), '') is not null and nullif(btrim(b.national_id::text), '') is not null and not coalesce(false or (nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '')), false)) or (nullif(btrim(a.birth_date::text), '') is not null and nullif(btrim(b.birth_date::text), '') is not null and not coalesce(false or (nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '')) or (a.birth_date::date = pgchain.swap_day_month(b.birth_date::date)) or (pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), ''))) or (levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2), false)) or false)
     and ra.seq = any(p_seqs)
$$;

-- The pairs of the records p_seqs that must stay apart: both records of a
-- cannot-link override in force, or of a conflict.
create or replace function people.apart(p_seqs bigint[]) returns table(a_seq bigint, b_seq bigint)
language sql stable as $$
  select a.seq, b.seq
    from people.overrides o
    join people.records a on a.system = o.a_system and a.source_key = o.a_key
    join people.records b on b.system = o.b_system and b.source_key = o.b_key
   where o.kind = 'cannot_link' and o.revoked_at is null
     and a.seq = any(p_seqs) and b.seq = any(p_seqs)
  union all
  select x.a_seq, x.b_seq from people.conflicting(p_seqs) x where cardinality(p_seqs) > 1
$$;

-- True when a component needs the constrained union: it is larger than
-- max_cluster_size or holds a pair that must stay apart.
create or replace function people.constrained(p_seqs bigint[]) returns boolean
language sql stable as $$
  select cardinality(p_seqs) > 20 or exists (select 1 from people.apart(p_seqs))
$$;

-- The constrained union of one component p_seqs: its edges are taken in a
-- fixed order (rule rank, value, then the bearers oldest first in source
-- order) and an edge joins its record to the value's set unless the union
-- would hold both records of a cannot-link override or, for an edge no
-- steward vouched for (must_link, a released hold), join records into a
-- set larger than max_cluster_size. Such an edge is held (links = false, recorded in review
-- when it linked before). Returns each record with its part (the part's
-- smallest number). The order depends on the records only, never on the
-- order events arrived in.
create or replace function people.constrain(p_seqs bigint[]) returns table(seq bigint, part bigint)
language plpgsql as $$
declare
  v_n      int := cardinality(p_seqs);
  v_parent int[];
  v_size   int[];
  v_cl_a   int[];
  v_cl_b   int[];
  v_e      record;
  v_a      int;
  v_b      int;
  v_x      int;
  v_y      int;
  v_i      int;
  v_why    text;
  v_rules  text[] := '{}';
  v_values text[] := '{}';
  v_seqs   bigint[] := '{}';
  v_recs   int[] := '{}';
  v_nodes  int[] := '{}';
  v_whys   text[] := '{}';
  v_vouch  boolean[] := '{}';
  v_links  boolean[];
  v_roots  int[];
begin
  select array_agg(a.ord::int), array_agg(b.ord::int) into v_cl_a, v_cl_b
    from people.apart(p_seqs) x
    join unnest(p_seqs) with ordinality a(seq, ord) on a.seq = x.a_seq
    join unnest(p_seqs) with ordinality b(seq, ord) on b.seq = x.b_seq;
  v_cl_a := coalesce(v_cl_a, '{}');
  v_cl_b := coalesce(v_cl_b, '{}');
  -- records are nodes 1..n, the values n+1.. (size 0)
  for v_e in
    select k.rule, k.value, k.seq, x.ord::int as rec,
           (v_n + dense_rank() over (order by k.rule, k.value))::int as node,
           (k.rule = 'must_link' or exists (
              select 1 from people.released_holds h
               where h.system = r.system and h.source_key = r.source_key and h.rule = k.rule and h.value = k.value)) as vouched
      from unnest(p_seqs) with ordinality x(seq, ord)
      join people.records r on r.seq = x.seq
      join people.keys k on k.seq = x.seq
     where not exists (select 1 from people.generic g where g.rule = k.rule and g.value = k.value)
     order by people.rule_rank(k.rule), k.value collate "C", r.created nulls last, r.system, r.source_key
  loop
    v_rules := v_rules || v_e.rule; v_values := v_values || v_e.value; v_seqs := v_seqs || v_e.seq;
    v_recs := v_recs || v_e.rec; v_nodes := v_nodes || v_e.node; v_whys := v_whys || null::text;
    v_vouch := v_vouch || v_e.vouched;
  end loop;
  v_parent := array(select g from generate_series(1, v_n + coalesce((select max(x) from unnest(v_nodes) x) - v_n, 0)) g);
  v_size := array(select case when g <= v_n then 1 else 0 end from generate_series(1, cardinality(v_parent)) g);
  for v_i in 1 .. cardinality(v_seqs) loop
    v_a := v_recs[v_i];
    while v_parent[v_a] <> v_a loop v_parent[v_a] := v_parent[v_parent[v_a]]; v_a := v_parent[v_a]; end loop;
    v_b := v_nodes[v_i];
    while v_parent[v_b] <> v_b loop v_parent[v_b] := v_parent[v_parent[v_b]]; v_b := v_parent[v_b]; end loop;
    continue when v_a = v_b;
    v_why := null;
    if v_size[v_a] > 0 and v_size[v_b] > 0 and v_size[v_a] + v_size[v_b] > 20 and not v_vouch[v_i] then
      v_why := 'max_cluster_size';
    end if;
    if v_why is null then
      for v_e in select a, b from unnest(v_cl_a, v_cl_b) p(a, b) loop
        v_x := v_e.a;
        while v_parent[v_x] <> v_x loop v_x := v_parent[v_x]; end loop;
        v_y := v_e.b;
        while v_parent[v_y] <> v_y loop v_y := v_parent[v_y]; end loop;
        if (v_x = v_a and v_y = v_b) or (v_x = v_b and v_y = v_a) then
          v_why := 'cannot_link';
          exit;
        end if;
      end loop;
    end if;
    if v_why is null then
      v_parent[v_b] := v_a;
      v_size[v_a] := v_size[v_a] + v_size[v_b];
    else
      v_whys[v_i] := v_why;
    end if;
  end loop;
  -- an edge links when its record ended in its value's set
  v_links := array(select false from generate_series(1, cardinality(v_seqs)));
  for v_i in 1 .. cardinality(v_seqs) loop
    v_a := v_recs[v_i];
    while v_parent[v_a] <> v_a loop v_a := v_parent[v_a]; end loop;
    v_b := v_nodes[v_i];
    while v_parent[v_b] <> v_b loop v_b := v_parent[v_b]; end loop;
    v_links[v_i] := v_a = v_b;
  end loop;
  with changed as (
    update people.keys k set links = x.links
      from unnest(v_rules, v_values, v_seqs, v_links, v_whys) x(rule, value, seq, links, why)
     where k.rule = x.rule and k.value = x.value and k.seq = x.seq and k.links <> x.links
    returning k.rule, k.value, k.seq, x.links, x.why)
  insert into people.review (reason, system, source_key, rule, value, clusters, size)
  select coalesce(c.why, 'max_cluster_size'), r.system, r.source_key, c.rule, c.value,
         array(select distinct o.cluster_id from people.keys b join people.records o on o.seq = b.seq
                where b.rule = c.rule and b.value = c.value and b.seq <> c.seq order by 1),
         v_n
    from changed c join people.records r on r.seq = c.seq
   where not c.links;
  v_roots := '{}';
  for v_i in 1 .. v_n loop
    v_a := v_i;
    while v_parent[v_a] <> v_a loop v_a := v_parent[v_a]; end loop;
    v_roots := v_roots || v_a;
  end loop;
  return query
    select x.seq, min(x.seq) over (partition by x.root)
      from unnest(p_seqs, v_roots) x(seq, root);
end $$;

-- The blocks of scored rules a union record is in now, as lock ids.
create or replace function people.blocks_of(p_system text, p_key text) returns int[]
language sql stable as $$
  select coalesce((select array_remove(array[
       case when u.birth_date is not null
            then hashtext('1.1' || chr(31) || u.birth_date::text) end,
       case when u.given_dmetaphone is not null and u.postcode is not null
            then hashtext('1.2' || chr(31) || u.given_dmetaphone::text || chr(31) || u.postcode::text) end,
       case when u.street is not null
            then hashtext('1.3' || chr(31) || u.street::text) end,
       case when u.given_dmetaphone is not null and u.surname_dmetaphone is not null
            then hashtext('1.4' || chr(31) || u.given_dmetaphone::text || chr(31) || u.surname_dmetaphone::text) end]::int[], null) from l1.person u
                    where u.system = p_system and u.source_key = p_key), '{}')
$$;

-- Locks the key values (phase 1) the record has now and those it had, so
-- two records that bring the same new value one after the other see each
-- other.
create or replace function people.lock_key_values(p_seq bigint, p_rules text[], p_values text[]) returns void
language plpgsql as $$
begin
  perform people.lock(1, array(
    select hashtext(x.rule || chr(31) || x.value)
      from (select n.rule, n.value from unnest(p_rules, p_values) n(rule, value)
            union
            select k.rule, k.value from people.keys k where k.seq = p_seq) x));
end $$;


-- The clusters of the records p_region (a region: closed under values that
-- are not generic), decided from the records as they are, by the one rule
-- rebuild follows too: a component through values that are not generic is
-- a cluster, unless it needs the constrained union (see constrained and
-- constrain). Sets the edges' links; returns each record with its cluster
-- id: the number of the cluster's oldest record in source order (created,
-- system, source key).
create or replace function people.decide(p_region bigint[]) returns table(seq bigint, cluster_id bigint)
language plpgsql as $$
declare
  v_comp  record;
  v_seqs  bigint[] := '{}';
  v_parts bigint[] := '{}';
  v_free  bigint[] := '{}';
begin
  for v_comp in
    select c.comp, array_agg(c.seq order by c.seq) as seqs from people.components(p_region) c group by c.comp
  loop
    if people.constrained(v_comp.seqs) then
      select v_seqs || array_agg(x.seq), v_parts || array_agg(x.part) into v_seqs, v_parts
        from people.constrain(v_comp.seqs) x;
    else
      v_seqs := v_seqs || v_comp.seqs;
      v_parts := v_parts || array_fill(v_comp.comp, array[cardinality(v_comp.seqs)]);
      v_free := v_free || v_comp.seqs;
    end if;
  end loop;
  update people.keys k set links = true
   where k.seq = any(v_free) and not k.links
     and not exists (select 1 from people.generic g where g.rule = k.rule and g.value = k.value);
  return query
    select p.seq, first_value(p.seq) over (partition by p.part order by r.created nulls last, r.system, r.source_key)
      from unnest(v_seqs, v_parts) p(seq, part) join people.records r on r.seq = p.seq;
end $$;

-- Deletes the record's edges to the values it no longer has; returns them.
create or replace function people.drop_edges(p_seq bigint, p_rules text[], p_values text[])
returns table(rule text, value text) language sql as $$
  delete from people.keys k
   where k.seq = p_seq
     and not exists (select 1 from unnest(p_rules, p_values) n(rule, value)
                      where n.rule = k.rule and n.value = k.value)
  returning k.rule, k.value
$$;

-- Adds the record's edges to its new values; returns them. An edge links
-- until decide says otherwise (never, to a generic value).
create or replace function people.add_edges(p_seq bigint, p_rules text[], p_values text[])
returns table(rule text, value text) language sql as $$
  insert into people.keys (rule, value, seq, links)
  select n.rule, n.value, p_seq,
         not exists (select 1 from people.generic g where g.rule = n.rule and g.value = n.value)
    from unnest(p_rules, p_values) n(rule, value)
  on conflict do nothing
  returning rule, value
$$;

-- History of a recomputation: a part holding several old clusters is a
-- merge; an old cluster spread over several parts is a split.
create or replace function people.record_history(p_system text, p_key text,
  p_seqs bigint[], p_parts bigint[], p_before bigint[], p_after bigint[]) returns void
language plpgsql as $$
begin
  insert into people.history (kind, cluster_id, clusters, system, source_key)
  select 'merge', i.after, array_agg(distinct i.before order by i.before) filter (where i.before <> i.after), p_system, p_key
    from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
   group by i.after
  having count(distinct i.before) > 1;
  insert into people.history (kind, cluster_id, clusters, system, source_key)
  select 'split', i.before, array_agg(distinct i.after order by i.after) filter (where i.after <> i.before), p_system, p_key
    from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
   where i.before is not null
   group by i.before
  having count(distinct i.after) > 1;
end $$;

-- link_record's result for a recomputation of p_clusters.
create or replace function people.recomputed(p_clusters bigint[],
  p_seqs bigint[], p_parts bigint[], p_before bigint[], p_after bigint[]) returns jsonb
language sql stable as $$
  -- an old id that is gone: merged into the part holding its oldest record
  with merged as (
    select o.before, i.after
      from (select i.before, min(i.seq) seq from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after) where i.before is not null group by i.before) o
      join unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after) on i.seq = o.seq
     where not exists (select 1 from unnest(p_after) j(after) where j.after = o.before)),
  -- a new id holding old records: split from the oldest of their clusters,
  -- unless that cluster merged into it (its oldest record changed)
  split as (
    select n.after, n.from_id
      from (select i.after, min(i.before) from_id from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
             where not (i.after = any(p_clusters)) group by i.after) n
     where n.from_id is not null
       and not exists (select 1 from merged m where m.before = n.from_id and m.after = n.after))
  select jsonb_build_object(
    'clusters', to_jsonb(array(
       select distinct c from (select unnest(p_clusters) union all select unnest(p_after)) x(c)
        where c is not null order by c)),
    'merged', coalesce((select jsonb_object_agg(m.before::text, m.after) from merged m), '{}'::jsonb),
    'split', coalesce((select jsonb_object_agg(x.after::text, x.from_id) from split x), '{}'::jsonb))
$$;


-- Links one union record as it is now (inserted, updated or deleted) and
-- returns what changed: {clusters: [every cluster id touched], merged:
-- {gone_id: survivor_id}, split: {new_id: from_id}}.
--   The record's region (its cluster before, the records it reaches now
--   through values that are not generic, the bearers of values it dropped,
--   and of values that stop being generic) is decided again from the
--   records as they are, by decide: the same answer rebuild gives, in any
--   order of events. A cluster's id is its oldest record's number.
--   p_force decides the region again even when the record's edges did not
--   change (a steward's override or release).
--   Locks: blocks of scored rules, key values, then clusters (see lock).
create or replace function people.link_record(p_system text, p_key text, p_force boolean default false) returns jsonb
language plpgsql as $$
declare
  v_rules   text[];            -- the record's key values now: (rules[i], values[i])
  v_values  text[];
  v_present boolean;           -- the record is in the union (not deleted)
  v_created bigint;            -- when the source first showed it
  v_seq     bigint;            -- the record's number
  v_new     boolean := false;  -- the graph sees the record for the first time
  v_own     bigint;            -- its cluster before this event (null: new)
  v_moved   boolean;           -- it changed its place in source order
  v_changed_rules  text[];     -- the values it dropped or added
  v_changed_values text[];
  v_region  bigint[];
  v_widen   bigint[];
  v_seqs    bigint[];
  v_before  bigint[];
  v_after   bigint[];
  v_was     bigint[];          -- the clusters before
  v_partners bigint[] := '{}'; -- the other records of scored pairs it dropped
  v_blocks  int[];             -- the blocks of scored rules it is in
begin
  -- the blocks it is in and those it was in (phase 0), before its pairs
  v_blocks := people.blocks_of(p_system, p_key);
  perform people.lock(0, v_blocks || coalesce((select r.blocks from people.records r
                                                 where r.system = p_system and r.source_key = p_key), '{}'));
  select coalesce(array_agg(k.rule order by k.rule, k.value), '{}'),
         coalesce(array_agg(k.value order by k.rule, k.value), '{}')
    into v_rules, v_values
    from people.keys_of(p_system, p_key) k;
  select true, u.created_ts_ms into v_present, v_created
    from l1.person u where u.system = p_system and u.source_key = p_key;
  v_present := coalesce(v_present, false);
  select r.seq, r.cluster_id, r.created is distinct from v_created into v_seq, v_own, v_moved
    from people.records r where r.system = p_system and r.source_key = p_key;
  if v_present and v_seq is not null then
    update people.records r set blocks = v_blocks where r.seq = v_seq and r.blocks <> v_blocks;
  end if;
  if v_seq is null and not v_present then
    return jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;

  perform people.lock_key_values(v_seq, v_rules, v_values);
  if v_seq is null then
    v_seq := people.record_id(p_system, p_key);
    v_new := true;
  end if;
  select coalesce(array_agg(c.rule), '{}'), coalesce(array_agg(c.value), '{}')
    into v_changed_rules, v_changed_values
    from (select d.rule, d.value from people.drop_edges(v_seq, v_rules, v_values) d
          union all
          select a.rule, a.value from people.add_edges(v_seq, v_rules, v_values) a) c;
  -- A scored pair is borne by both records: the other record's edge comes
  -- and goes with this one's (the other's own events compute the same pair).
  with gone as (
    delete from people.keys k
     using unnest(v_changed_rules, v_changed_values) c(rule, value)
     where k.rule = c.rule and k.value = c.value and k.seq <> v_seq
       and k.rule in ('person')
       and not exists (select 1 from unnest(v_rules, v_values) n(rule, value) where n.rule = c.rule and n.value = c.value)
    returning k.seq)
  select coalesce(array_agg(gone.seq), '{}') into v_partners from gone;
  insert into people.keys (rule, value, seq, links)
  select c.rule, c.value, o.seq, true
    from unnest(v_changed_rules, v_changed_values) c(rule, value)
    join unnest(v_rules, v_values) n(rule, value) on n.rule = c.rule and n.value = c.value
    join people.records o
      on (o.system, o.source_key) = (case when (split_part(c.value, chr(31), 1), split_part(c.value, chr(31), 2)) = (p_system, p_key)
                                          then split_part(c.value, chr(31), 3) else split_part(c.value, chr(31), 1) end,
                                     case when (split_part(c.value, chr(31), 1), split_part(c.value, chr(31), 2)) = (p_system, p_key)
                                          then split_part(c.value, chr(31), 4) else split_part(c.value, chr(31), 2) end)
   where c.rule in ('person')
  on conflict do nothing;

  -- Nothing that decides clusters changed: the record stays where it is.
  if not p_force and v_present and not v_new and not v_moved and v_changed_rules = '{}' then
    return jsonb_build_object('clusters', to_jsonb(array[v_own]), 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;

  if not v_present then
    delete from people.records r where r.seq = v_seq;
  elsif v_new then
    insert into people.records (seq, system, source_key, cluster_id, created, blocks)
    values (v_seq, p_system, p_key, v_seq, v_created, v_blocks);
  elsif v_moved then
    update people.records r set created = v_created where r.seq = v_seq;
  end if;

  -- Only values no other record bears came or went (a new e-mail, a
  -- newcomer with nothing in common), none generic: no edge between two
  -- records changed, so no cluster did. A newcomer is a cluster of its own.
  -- (The values are locked: a record bringing one of them at once waits
  -- and then finds this one.) With conflicts, only a
  -- newcomer: another value of a conflict column may part or join records.
  if not p_force and v_present and not coalesce(v_moved, false) and v_partners = '{}' and v_new and not exists (
       select 1 from unnest(v_changed_rules, v_changed_values) c(rule, value)
        where exists (select 1 from people.keys k where k.rule = c.rule and k.value = c.value and k.seq <> v_seq)
           or exists (select 1 from people.generic g where g.rule = c.rule and g.value = c.value)
           or coalesce(people.max_clusters(c.rule), 1) < 1) then
    return jsonb_build_object('clusters', to_jsonb(array[coalesce(v_own, v_seq)]), 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;

  -- The region: the cluster before, the record, the bearers of the values
  -- it dropped; widened by the bearers of values that stop being generic.
  v_region := people.lock_region(
    array(select r.seq from people.records r where r.cluster_id = v_own)
    || case when v_present then array[v_seq] else '{}' end
    || v_partners
    || array(select b.seq from people.keys b join unnest(v_changed_rules, v_changed_values) c(rule, value)
               on b.rule = c.rule and b.value = c.value
              where not exists (select 1 from people.generic g where g.rule = c.rule and g.value = c.value)));
  loop
    v_widen := people.settle_generic(
      v_changed_rules || array(select k.rule from people.keys k where k.seq = any(v_region) order by k.rule, k.value),
      v_changed_values || array(select k.value from people.keys k where k.seq = any(v_region) order by k.rule, k.value));
    exit when v_widen <@ v_region;
    v_region := people.lock_region(v_region || v_widen);
  end loop;

  select coalesce(array_agg(d.seq order by d.seq), '{}'), coalesce(array_agg(d.cluster_id order by d.seq), '{}'),
         coalesce(array_agg(case when v_new and d.seq = v_seq then null else r.cluster_id end order by d.seq), '{}')
    into v_seqs, v_after, v_before
    from people.decide(v_region) d join people.records r on r.seq = d.seq;
  v_was := array(select distinct c from unnest(v_before || v_own) c where c is not null order by c);

  update people.records r set cluster_id = i.after
    from unnest(v_seqs, v_after) i(seq, after) where i.seq = r.seq and r.cluster_id <> i.after;
  perform people.record_history(p_system, p_key, v_seqs, v_after, v_before, v_after);
  return people.recomputed(v_was, v_seqs, v_after, v_before, v_after);
end $$;

-- A key value of a rule by column, clean: {column: value}; a scored
-- pair's: both records and how they compare now (see compare).
drop function if exists people.matched(text, text);
create function people.matched(p_rule text, p_value text) returns jsonb
language sql stable as $$
  select case p_rule
    when 'must_link' then jsonb_build_object('override', p_value::bigint)
    when 'person' then jsonb_build_object(
      'pair', jsonb_build_array(split_part(p_value, chr(31), 1) || ':' || split_part(p_value, chr(31), 2),
                                split_part(p_value, chr(31), 3) || ':' || split_part(p_value, chr(31), 4)))
      || coalesce(people.compare(p_rule, split_part(p_value, chr(31), 1), split_part(p_value, chr(31), 2),
                                  split_part(p_value, chr(31), 3), split_part(p_value, chr(31), 4)), '{}')
    when 'national_id' then jsonb_build_object('national_id', p_value)
    when 'name_birth' then jsonb_build_object('full_name', split_part(p_value, chr(31), 1), 'birth_date', split_part(p_value, chr(31), 2))
    when 'email' then jsonb_build_object('email', p_value)
  end
$$;

-- Why are these two records one customer: the chain of links between them,
-- hop by hop, each with the rule that made it and the values it matched
-- ({column: value}), every rule the hop's two records match on, and when
-- the link was made. No rows: they are not linked.
drop function if exists people.explain(text, text, text, text);
create function people.explain(a_system text, a_key text, b_system text, b_key text)
returns table(hop int, from_system text, from_key text, rule text, matched jsonb, to_system text, to_key text,
              rules text[], linked_at timestamptz)
language plpgsql stable as $$
declare
  v_a bigint;
  v_b bigint;
  v_seen bigint[];
  v_parent bigint[];
  v_rule text[];
  v_value text[];
  v_frontier bigint[];
  v_at int;
  v_hops int := 0;
  v_path bigint[] := '{}';
  v_cur bigint;
begin
  select r.seq into v_a from people.records r where r.system = a_system and r.source_key = a_key;
  select r.seq into v_b from people.records r where r.system = b_system and r.source_key = b_key;
  if v_a is null or v_b is null or v_a = v_b then
    return;
  end if;
  v_seen := array[v_a]; v_parent := array[null::bigint]; v_rule := array[null::text]; v_value := array[null::text];
  v_frontier := array[v_a];
  while not (v_b = any(v_seen)) and cardinality(v_frontier) > 0 loop
    with step as (
      select distinct on (b.seq) b.seq, k.seq as parent, k.rule, k.value
        from people.keys k
        join people.keys b on b.rule = k.rule and b.value = k.value and b.links
       where k.seq = any(v_frontier) and k.links and not (b.seq = any(v_seen))
       order by b.seq, k.rule, k.value, k.seq)
    select v_seen || array_agg(step.seq), v_parent || array_agg(step.parent),
           v_rule || array_agg(step.rule), v_value || array_agg(step.value), coalesce(array_agg(step.seq), '{}')
      into v_seen, v_parent, v_rule, v_value, v_frontier
      from step;
  end loop;
  if not (v_b = any(v_seen)) then
    return;
  end if;
  v_cur := v_b;
  while v_cur <> v_a loop
    v_path := v_cur || v_path;
    v_cur := v_parent[array_position(v_seen, v_cur)];
  end loop;
  v_cur := v_a;
  foreach v_at in array array(select array_position(v_seen, p) from unnest(v_path) p) loop
    v_hops := v_hops + 1;
    return query
      select v_hops, f.system, f.source_key, v_rule[v_at], people.matched(v_rule[v_at], v_value[v_at]), t.system, t.source_key,
             array(select distinct x.rule from people.keys x
                     join people.keys y on y.rule = x.rule and y.value = x.value and y.links
                    where x.seq = f.seq and y.seq = t.seq and x.links order by 1),
             (select greatest(x.made_at, y.made_at) from people.keys x, people.keys y
               where x.rule = v_rule[v_at] and x.value = v_value[v_at] and x.seq = f.seq
                 and y.rule = x.rule and y.value = x.value and y.seq = t.seq)
        from people.records f, people.records t
       where f.seq = v_parent[v_at] and t.seq = v_seen[v_at];
  end loop;
end $$;

-- Every link of the cluster of one record, for a steward: each key value
-- its records share, with the rule, the values ({column: value}), the
-- records that bear it here, and when the last of them was linked. state:
-- `links`; `held` (a merge beyond max_cluster_size, see review) or
-- `generic` (shared by too many clusters), with the bearers in other
-- clusters counted in `elsewhere`.
create or replace function people.explain_cluster(p_system text, p_key text)
returns table(cluster_id bigint, rule text, matched jsonb, state text, records jsonb, elsewhere bigint, linked_at timestamptz)
language sql stable as $$
  with mine as (
    select r.seq, r.system, r.source_key, r.cluster_id
      from people.records r
     where r.cluster_id = (select o.cluster_id from people.records o where o.system = p_system and o.source_key = p_key)),
  edges as (
    select m.cluster_id, k.rule, k.value, k.made_at, m.seq, m.system, m.source_key,
           case when k.links then 'links'
                when exists (select 1 from people.generic g where g.rule = k.rule and g.value = k.value) then 'generic'
                else 'held' end as state
      from mine m join people.keys k on k.seq = m.seq)
  select e.cluster_id, e.rule, people.matched(e.rule, e.value), e.state,
         jsonb_agg(jsonb_build_object('system', e.system, 'source_key', e.source_key) order by e.system, e.source_key),
         (select count(*) from people.keys b
           where b.rule = e.rule and b.value = e.value and b.seq not in (select m.seq from mine m)),
         max(e.made_at)
    from edges e
   group by e.cluster_id, e.rule, e.value, e.state
  having e.state <> 'links' or count(*) > 1
   order by max(e.made_at), e.rule, e.value
$$;

-- Two of link_record's answers as one: every cluster either touched, and
-- both merges and splits (several records re-linked in one go).
create or replace function people.both_changes(a jsonb, b jsonb) returns jsonb
language sql immutable as $$
  select jsonb_build_object(
    'clusters', (select coalesce(jsonb_agg(distinct c order by c), '[]') from jsonb_array_elements((a->'clusters') || (b->'clusters')) c),
    'merged', (a->'merged') || (b->'merged'),
    'split', (a->'split') || (b->'split'))
$$;

-- Re-links the records p_records (an array of [system, source_key]) after a
-- steward's change, then recomputes their golden records and publishes
-- them when the graph has unify and publish functions (identity_unify and
-- identity_publish on this schema). Returns what changed, as link_record.
create or replace function people.relink_records(p_records text[], p_cause jsonb) returns jsonb
language plpgsql as $$
declare
  v_out jsonb := jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  v_one jsonb;
  v_i   int;
begin
  for v_i in 1 .. coalesce(array_length(p_records, 1), 0) loop
    v_one := people.link_record(p_records[v_i][1], p_records[v_i][2], true);
    v_out := people.both_changes(v_out, v_one);
  end loop;
  if to_regprocedure(format('%I.unify(bigint[], jsonb, jsonb)', 'people')) is not null then
    execute format('select %I.unify($1, $2, $3)', 'people')
      using array(select jsonb_array_elements_text(v_out->'clusters')::bigint), v_out->'merged', v_out->'split';
  end if;
  if to_regprocedure(format('%I.publish(bigint[], jsonb)', 'people')) is not null then
    execute format('select %I.publish($1, $2)', 'people')
      using array(select jsonb_array_elements_text(v_out->'clusters')::bigint), p_cause;
  end if;
  return v_out;
end $$;

-- A steward's override on two records, kept with who and why, honoured per
-- event and by rebuild until revoked: must_link makes them one entity,
-- cannot_link keeps them apart (it wins over every link, must_link too).
-- The records are re-linked at once. Returns what changed, with the
-- override's id.
create or replace function people.make_override(p_kind text, p_a_system text, p_a_key text, p_b_system text, p_b_key text, p_by text, p_why text)
returns jsonb language plpgsql as $$
declare
  v_id bigint;
begin
  if nullif(btrim(p_by), '') is null or nullif(btrim(p_why), '') is null then
    raise exception '%: an override needs who makes it and why', 'people' using errcode = '22023';
  end if;
  if (p_a_system, p_a_key) = (p_b_system, p_b_key) then
    raise exception '%: an override needs two records', 'people' using errcode = '22023';
  end if;
  if not exists (select 1 from people.records r where r.system = p_a_system and r.source_key = p_a_key) then
    raise exception '%: no record %:% in the graph', 'people', p_a_system, p_a_key using errcode = '22023';
  end if;
  if not exists (select 1 from people.records r where r.system = p_b_system and r.source_key = p_b_key) then
    raise exception '%: no record %:% in the graph', 'people', p_b_system, p_b_key using errcode = '22023';
  end if;
  select o.id into v_id from people.overrides o
   where o.revoked_at is null and o.kind <> p_kind
     and ((o.a_system, o.a_key, o.b_system, o.b_key) = (p_a_system, p_a_key, p_b_system, p_b_key)
       or (o.a_system, o.a_key, o.b_system, o.b_key) = (p_b_system, p_b_key, p_a_system, p_a_key));
  if v_id is not null then
    raise exception '%: override % says the opposite of these two records; revoke it first', 'people', v_id
      using errcode = '22023';
  end if;
  insert into people.overrides (kind, a_system, a_key, b_system, b_key, made_by, why)
  values (p_kind, p_a_system, p_a_key, p_b_system, p_b_key, p_by, p_why)
  returning id into v_id;
  return people.relink_records(array[[p_a_system, p_a_key], [p_b_system, p_b_key]],
           jsonb_build_object('override', v_id, 'by', p_by))
         || jsonb_build_object('override', v_id);
end $$;

-- A steward links two records by hand: one entity from now on.
create or replace function people.must_link(a_system text, a_key text, b_system text, b_key text, p_by text, p_why text)
returns jsonb language sql as $$
  select people.make_override('must_link', a_system, a_key, b_system, b_key, p_by, p_why)
$$;

-- A steward keeps two records apart: never one entity, whatever they share.
create or replace function people.cannot_link(a_system text, a_key text, b_system text, b_key text, p_by text, p_why text)
returns jsonb language sql as $$
  select people.make_override('cannot_link', a_system, a_key, b_system, b_key, p_by, p_why)
$$;

-- Releases a generic value after review: it links again from now on (its
-- bearers' clusters merge), and is never made generic again, per event or
-- by rebuild. Returns what changed.
create or replace function people.release_value(p_rule text, p_value text, p_by text, p_why text) returns jsonb
language plpgsql as $$
declare
  v_records text[];
begin
  if nullif(btrim(p_by), '') is null or nullif(btrim(p_why), '') is null then
    raise exception '%: a release needs who makes it and why', 'people' using errcode = '22023';
  end if;
  delete from people.generic g where g.rule = p_rule and g.value = p_value;
  if not found then
    raise exception '%: % value % is not generic', 'people', p_rule, p_value using errcode = '22023';
  end if;
  insert into people.released (rule, value, released_by, why) values (p_rule, p_value, p_by, p_why);
  select coalesce(array_agg(array[r.system, r.source_key] order by r.seq), '{}') into v_records
    from people.keys k join people.records r on r.seq = k.seq
   where k.rule = p_rule and k.value = p_value;
  return people.relink_records(v_records, jsonb_build_object('released', jsonb_build_object('rule', p_rule, 'value', p_value), 'by', p_by));
end $$;

-- Releases a link max_cluster_size held (see review) after review: the
-- record links through that value again beyond the maximum, per event and
-- by rebuild (kept in released_holds); a cannot-link still holds it.
create or replace function people.release_held(p_system text, p_key text, p_rule text, p_value text, p_by text) returns jsonb
language plpgsql as $$
begin
  if not exists (
    select 1 from people.keys k join people.records r on k.seq = r.seq
     where r.system = p_system and r.source_key = p_key
       and k.rule = p_rule and k.value = p_value and not k.links
       and not exists (select 1 from people.generic g where g.rule = k.rule and g.value = k.value))
  then
    raise exception '%: no held link of %:% by % value %', 'people', p_system, p_key, p_rule, p_value using errcode = '22023';
  end if;
  insert into people.released_holds (system, source_key, rule, value, released_by)
  values (p_system, p_key, p_rule, p_value, p_by) on conflict do nothing;
  return people.relink_records(array[[p_system, p_key]],
           jsonb_build_object('released_hold', jsonb_build_object('rule', p_rule, 'value', p_value), 'by', p_by));
end $$;

-- Revokes an override: its records are re-linked without it.
create or replace function people.revoke_override(p_id bigint, p_by text) returns jsonb
language plpgsql as $$
declare
  v_o people.overrides;
begin
  update people.overrides o set revoked_at = now(), revoked_by = p_by
   where o.id = p_id and o.revoked_at is null
  returning * into v_o;
  if v_o.id is null then
    raise exception '%: no override % in force', 'people', p_id using errcode = '22023';
  end if;
  return people.relink_records(array[[v_o.a_system, v_o.a_key], [v_o.b_system, v_o.b_key]],
           jsonb_build_object('revoked_override', p_id, 'by', p_by));
end $$;

-- rebuild's steps, each a function of its own. They share the transaction's
-- temp tables: identity_src (every union record, numbered), identity_edges
-- and identity_labels (the linking edges and each record's component), and
-- identity_candidates (the values that may be generic).

-- Every record of the union with its permanent number into identity_src;
-- records never numbered get new numbers, oldest source change first.
create or replace function people.rebuild_number_records() returns void
language plpgsql as $$
declare
  v_new   bigint;
  v_first bigint;
begin
  create temp table identity_new on commit drop as
  select row_number() over (order by u.created_ts_ms nulls last, u.system, u.source_key) as n, u.system, u.source_key
    from l1.person u
   where not exists (select 1 from people.ids i where i.system = u.system and i.source_key = u.source_key);
  select count(*) into v_new from identity_new;
  if v_new > 0 then
    select nextval('people.cluster_ids'::regclass) into v_first;
    perform setval('people.cluster_ids'::regclass, v_first + v_new - 1);
    insert into people.ids (system, source_key, id) select n.system, n.source_key, v_first + n.n - 1 from identity_new n;
  end if;
  create temp table identity_src on commit drop as
  select i.id as seq, u.system, u.source_key, u.created_ts_ms as created
    from l1.person u join people.ids i on i.system = u.system and i.source_key = u.source_key;
  analyze identity_src;
end $$;

-- The key values of every record (edges, linking), then the values with
-- more bearers than their rule's max_clusters: candidates for generic
-- (identity_candidates), their edges not linking until the components
-- without any of them decide.
create or replace function people.rebuild_keys() returns void
language plpgsql as $$
begin
  insert into people.keys (rule, value, seq, links)
  select k.rule, k.value, x.seq, true
    from identity_src x
    join l1.person u on u.system = x.system and u.source_key = x.source_key
   cross join lateral (values
      ('national_id', case when nullif(btrim((u.national_id)::text), '') is not null
        then nullif(btrim((u.national_id)::text), '') end),
      ('name_birth', case when nullif(btrim((u.full_name)::text), '') is not null and nullif(btrim((u.birth_date)::text), '') is not null
        then concat_ws(chr(31), nullif(btrim((u.full_name)::text), ''), nullif(btrim((u.birth_date)::text), '')) end),
      ('email', case when nullif(btrim((u.email)::text), '') is not null
        then nullif(btrim((u.email)::text), '') end)
    ) k(rule, value)
   where k.value is not null;
  -- scored pairs, each compared once and borne by both its records
  insert into people.keys (rule, value, seq, links)
  select 'person', p.value, both_.seq, true
    from (select case when (a.system, a.source_key) < (b.system, b.source_key)
     then concat_ws(chr(31), a.system, a.source_key, b.system, b.source_key)
     else concat_ws(chr(31), b.system, b.source_key, a.system, a.source_key) end as value, x.seq as a_seq, y.seq as b_seq
            from identity_src x
            join l1.person a on a.system = x.system and a.source_key = x.source_key
           cross join lateral (
      select b.system, b.source_key from l1.person b
       where b.birth_date = a.birth_date and (b.system, b.source_key) > (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.given_dmetaphone = a.given_dmetaphone and b.postcode = a.postcode and (b.system, b.source_key) > (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.street = a.street and (b.system, b.source_key) > (a.system, a.source_key)
      union select b.system, b.source_key from l1.person b
       where b.given_dmetaphone = a.given_dmetaphone and b.surname_dmetaphone = a.surname_dmetaphone and (b.system, b.source_key) > (a.system, a.source_key)) c
            join l1.person b on b.system = c.system and b.source_key = c.source_key
            join identity_src y on y.system = b.system and y.source_key = b.source_key
           where ((case when nullif(btrim(a.national_id::text), '') is null or nullif(btrim(b.national_id::text), '') is null then 0 when nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '') then 12 else -14 end) + (case when nullif(btrim(a.given::text), '') is null or nullif(btrim(b.given::text), '') is null then 0 when nullif(btrim(a.given::text), '') = nullif(btrim(b.given::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and (nullif(btrim(b.surname::text), '') is not null or nullif(btrim(a.surname::text), '') is not null) then 4 when pgchain.same_given_name(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) then 3 when pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.given::text), '')) >= 0.8 then 3 else -2 end) + (case when nullif(btrim(a.surname::text), '') is null or nullif(btrim(b.surname::text), '') is null then 0 when nullif(btrim(a.surname::text), '') = nullif(btrim(b.surname::text), '') then 4 when coalesce(pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.given::text), '')) >= 0.8, true) and coalesce(pgchain.jaro_winkler(nullif(btrim(a.given::text), ''), nullif(btrim(b.surname::text), '')) >= 0.8, true) and (nullif(btrim(b.given::text), '') is not null or nullif(btrim(a.given::text), '') is not null) then 4 when pgchain.jaro_winkler(nullif(btrim(a.surname::text), ''), nullif(btrim(b.surname::text), '')) >= 0.85 then 3 else -3 end) + (case when nullif(btrim(a.birth_date::text), '') is null or nullif(btrim(b.birth_date::text), '') is null then 0 when nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '') then 7 when a.birth_date::date = pgchain.swap_day_month(b.birth_date::date) then 5 when pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) then 5 when levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2 then 0 else -9 end) + (case when nullif(btrim(a.street::text), '') is null or nullif(btrim(b.street::text), '') is null then 0 when nullif(btrim(a.street::text), '') = nullif(btrim(b.street::text), '') then 1 when similarity(nullif(btrim(a.street::text), ''), nullif(btrim(b.street::text), '')) >= 0.6 then 0.5 else -3 end) + (case when nullif(btrim(a.postcode::text), '') is null or nullif(btrim(b.postcode::text), '') is null then 0 when nullif(btrim(a.postcode::text), '') = nullif(btrim(b.postcode::text), '') then 1 when levenshtein(nullif(btrim(a.postcode::text), ''), nullif(btrim(b.postcode::text), '')) <= 1 then 0.5 else -3 end) + (case when nullif(btrim(a.phone::text), '') is null or nullif(btrim(b.phone::text), '') is null then 0 when nullif(btrim(a.phone::text), '') = nullif(btrim(b.phone::text), '') then 1 else -2 end) + (case when nullif(btrim(a.email::text), '') is null or nullif(btrim(b.email::text), '') is null then 0 when nullif(btrim(a.email::text), '') = nullif(btrim(b.email::text), '') then 8 else -6 end))::float8 >= 9) p
   cross join lateral (values (p.a_seq), (p.b_seq)) both_(seq)
  on conflict do nothing;
  insert into people.keys (rule, value, seq, links)
  select 'must_link', o.id::text, x.seq, true
    from people.overrides o
    join identity_src x on (x.system = o.a_system and x.source_key = o.a_key)
                        or (x.system = o.b_system and x.source_key = o.b_key)
   where o.kind = 'must_link' and o.revoked_at is null
  on conflict do nothing;
  analyze people.keys;

  create temp table identity_candidates on commit drop as
  select k.rule, k.value from people.keys k
   where people.max_clusters(k.rule) is not null
     and not exists (select 1 from people.released x where x.rule = k.rule and x.value = k.value)
   group by k.rule, k.value having count(*) > people.max_clusters(k.rule);
  update people.keys k set links = false from identity_candidates c where c.rule = k.rule and c.value = k.value;
end $$;

-- Connected components of the linking edges into identity_labels (seq,
-- label: the component's smallest seq; a record with no linking edge has
-- no row). identity_edges: the values with two or more linking bearers,
-- numbered (kid).
create or replace function people.rebuild_label_components() returns void
language plpgsql as $$
declare
  v_lowered bigint;
begin
  truncate identity_edges, identity_labels;
  insert into identity_edges (seq, kid, rule, value)
  select k.seq, dense_rank() over (order by k.rule, k.value), k.rule, k.value
    from people.keys k
   where k.links and (k.rule, k.value) in (
     select k2.rule, k2.value from people.keys k2 where k2.links group by 1, 2 having count(*) > 1);
  create index on identity_edges (seq);
  create index on identity_edges (kid);
  analyze identity_edges;
  insert into identity_labels select distinct e.seq, e.seq from identity_edges e;
  -- Minimum-label propagation through shared values, with pointer jumping.
  loop
    with kmin as (select e.kid, min(l.label) as label from identity_edges e join identity_labels l on l.seq = e.seq group by e.kid),
         best as (select e.seq, min(m.label) as label from identity_edges e join kmin m on m.kid = e.kid group by e.seq)
    update identity_labels l set label = best.label from best where best.seq = l.seq and best.label < l.label;
    get diagnostics v_lowered = row_count;
    update identity_labels l set label = p.label from identity_labels p where p.seq = l.label and p.label < l.label;
    exit when v_lowered = 0;
  end loop;
end $$;

-- Candidates whose bearers fall into more than max_clusters components
-- (without any candidate) are generic; the others link again. True when
-- some link again: the components must be redone.
create or replace function people.rebuild_settle_candidates() returns boolean
language plpgsql as $$
begin
  insert into people.generic (rule, value, clusters, records)
  select c.rule, c.value, least(count(distinct coalesce(l.label, k.seq)), people.max_clusters(c.rule) + 1), count(*)
    from identity_candidates c
    join people.keys k on k.rule = c.rule and k.value = c.value
    left join identity_labels l on l.seq = k.seq
   group by c.rule, c.value
  having count(distinct coalesce(l.label, k.seq)) > people.max_clusters(c.rule);
  update people.keys k set links = true
    from identity_candidates c
   where c.rule = k.rule and c.value = k.value
     and not exists (select 1 from people.generic g where g.rule = c.rule and g.value = c.value);
  return found;
end $$;

-- The records with their clusters: each component, or the parts of its
-- constrained union (larger than max_cluster_size, or holding a
-- cannot-link pair), has the number of its oldest record as id.
create or replace function people.rebuild_number_clusters() returns void
language plpgsql as $$
declare
  v_comp record;
begin
  insert into people.records (seq, system, source_key, cluster_id, created, blocks)
  select x.seq, x.system, x.source_key, coalesce(l.label, x.seq), x.created, array_remove(array[
       case when u.birth_date is not null
            then hashtext('1.1' || chr(31) || u.birth_date::text) end,
       case when u.given_dmetaphone is not null and u.postcode is not null
            then hashtext('1.2' || chr(31) || u.given_dmetaphone::text || chr(31) || u.postcode::text) end,
       case when u.street is not null
            then hashtext('1.3' || chr(31) || u.street::text) end,
       case when u.given_dmetaphone is not null and u.surname_dmetaphone is not null
            then hashtext('1.4' || chr(31) || u.given_dmetaphone::text || chr(31) || u.surname_dmetaphone::text) end]::int[], null)
    from identity_src x left join identity_labels l on l.seq = x.seq
    join l1.person u on u.system = x.system and u.source_key = x.source_key;
  analyze people.records;
  for v_comp in
    select r.cluster_id, array_agg(r.seq order by r.seq) as seqs
      from people.records r
     where r.cluster_id in (
       select c.cluster_id from people.records c group by c.cluster_id
       having count(*) > 20
       union
       select a.cluster_id
    from people.overrides o
    join people.records a on a.system = o.a_system and a.source_key = o.a_key
    join people.records b on b.system = o.b_system and b.source_key = o.b_key
   where o.kind = 'cannot_link' and o.revoked_at is null
     and a.cluster_id = b.cluster_id
       union
       select ra.cluster_id
    from people.records ra
    join l1.person a on a.system = ra.system and a.source_key = ra.source_key
    join people.records rb on rb.cluster_id = ra.cluster_id and rb.seq > ra.seq
    join l1.person b on b.system = rb.system and b.source_key = rb.source_key
   where ((nullif(btrim(a.national_id::text), '') is not null and nullif(btrim(b.national_id::text), '') is not null and not coalesce(false or (nullif(btrim(a.national_id::text), '') = nullif(btrim(b.national_id::text), '')), false)) or (nullif(btrim(a.birth_date::text), '') is not null and nullif(btrim(b.birth_date::text), '') is not null and not coalesce(false or (nullif(btrim(a.birth_date::text), '') = nullif(btrim(b.birth_date::text), '')) or (a.birth_date::date = pgchain.swap_day_month(b.birth_date::date)) or (pgchain.transposed(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), ''))) or (levenshtein(nullif(btrim(a.birth_date::text), ''), nullif(btrim(b.birth_date::text), '')) <= 2), false)) or false))
     group by r.cluster_id
  loop
    update people.records r set cluster_id = c.part
      from people.constrain(v_comp.seqs) c where c.seq = r.seq and r.cluster_id <> c.part;
  end loop;
  update people.records r set cluster_id = a.anchor
    from (select o.seq, first_value(o.seq) over (partition by o.cluster_id order by o.created nulls last, o.system, o.source_key) as anchor
            from people.records o) a
   where a.seq = r.seq and r.cluster_id <> a.anchor;
  analyze people.records;
end $$;

-- Bulk path: builds the whole graph from the union at once (the initial
-- load, or after a change of rules). It decides as link_record does, so
-- clusters, ids, generic values and held links come out the same; a
-- cluster's id is its oldest record's number, as per event.
create or replace procedure people.rebuild() language plpgsql as $$
declare
  v_round int;
begin
  perform pg_advisory_xact_lock(hashtext('pgchain.identity.' || 'people' || '.rebuild'));
  lock table people.records, people.keys in exclusive mode;
  truncate people.records, people.keys, people.generic;

  perform people.rebuild_number_records();
  perform people.rebuild_keys();
  create temp table identity_edges (seq bigint, kid int, rule text, value text) on commit drop;
  create temp table identity_labels (seq bigint primary key, label bigint) on commit drop;
  -- Components without the candidates; then, if some candidates are not
  -- generic after all, again with them.
  for v_round in 1..2 loop
    perform people.rebuild_label_components();
    exit when v_round = 2;
    exit when not people.rebuild_settle_candidates();
    drop index if exists identity_edges_seq_idx;
    drop index if exists identity_edges_kid_idx;
  end loop;
  perform people.rebuild_number_clusters();

  insert into people.history (kind, cluster_id, clusters) values ('rebuild', null, '{}');
end $$;

-- Re-links everything after a change of rules, while chains run: rebuild,
-- then the golden records (unify_all) and the outbox (publish_all) when
-- the schema has identity_unify's and identity_publish's. One transaction:
-- a chain's link step waits for it (rebuild locks the graph's tables) and
-- goes on with the new graph; clusters keep their ids (their oldest
-- records' numbers), so only what the new rules change is published.
create or replace procedure people.relink_all() language plpgsql as $$
begin
  call people.rebuild();
  if to_regprocedure(format('%I.unify_all()', 'people')) is not null then
    execute format('call %I.unify_all()', 'people');
  end if;
  if to_regprocedure(format('%I.publish_all()', 'people')) is not null then
    execute format('call %I.publish_all()', 'people');
  end if;
end $$;

-- L2 link step: re-links the record the previous step wrote (`ev.record`).
create or replace procedure people.link_person(inout ev jsonb) language plpgsql as $$
declare
  v_rec jsonb := ev->'record';
  v_out jsonb;
  v_one jsonb;
  v_key text;
begin
  if v_rec is null or v_rec->>'system' is null then
    raise exception '%: the event has no `record` {system, source_key}; an l1_cleanse step must come first', 'people.link_person'
      using errcode = '22023';
  end if;
  if (v_rec->>'truncated')::boolean is true then
    -- GUARD: a truncated source unlinks every record it had.
    v_out := jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
    for v_key in select r.source_key from people.records r where r.system = v_rec->>'system' order by r.seq loop
      v_one := people.link_record(v_rec->>'system', v_key);
      v_out := people.both_changes(v_out, v_one);
    end loop;
  else
    if v_rec->>'source_key' is null then
      raise exception '%: `record` has no source_key', 'people.link_person' using errcode = '22023';
    end if;
    v_out := people.link_record(v_rec->>'system', v_rec->>'source_key');
  end if;
  ev := ev || jsonb_build_object('identity', v_out);
end $$;
