-- pgchain render: idr.link_member (template identity_link)
-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.

create schema if not exists idr;

-- Every record of the union the graph has seen; seq orders them by age.
create sequence if not exists idr.record_seq;
-- Cluster ids (the customer id downstream): never reused.
create sequence if not exists idr.cluster_ids;
create table if not exists idr.records (
  seq        bigint primary key,
  system     text   not null,
  source_key text   not null,
  cluster_id bigint not null,
  unique (system, source_key)
);
create index if not exists records_cluster on idr.records (cluster_id);

-- Record ↔ key value edges. links is false for a generic value's edges and
-- for edges held back by the maximum cluster size (see review).
create table if not exists idr.keys (
  rule  text    not null,
  value text    not null,
  seq   bigint  not null,
  links boolean not null default true,
  primary key (rule, value, seq)
);
create index if not exists keys_seq on idr.keys (seq);
-- When the edge was made (by an event or by rebuild); edges from before
-- this column existed show the upgrade's time.
alter table idr.keys add column if not exists made_at timestamptz not null default now();

-- Key values that stopped linking: shared by more than max_clusters clusters.
create table if not exists idr.generic (
  rule      text   not null,
  value     text   not null,
  clusters  int    not null,
  records   int    not null,
  marked_at timestamptz not null default now(),
  primary key (rule, value)
);

-- Merges, splits and rebuilds, with the record whose change caused them.
create table if not exists idr.history (
  id         bigserial primary key,
  at         timestamptz not null default now(),
  kind       text   not null check (kind in ('merge', 'split', 'rebuild')),
  cluster_id bigint,
  clusters   bigint[] not null default '{}',
  system     text,
  source_key text
);
create index if not exists history_cluster on idr.history (cluster_id);

-- Links refused because the merge would exceed max_cluster_size.
create table if not exists idr.review (
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

-- A steward's overrides: record pairs linked by hand (must_link), with who
-- and why; honoured per event and by rebuild as a key value of their own
-- (rule `must_link`, value the override's id). A revoked override stays,
-- with when.
create table if not exists idr.overrides (
  id         bigserial primary key,
  kind       text not null check (kind in ('must_link')),
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
create table if not exists idr.released (
  rule        text not null,
  value       text not null,
  released_by text not null,
  why         text not null,
  released_at timestamptz not null default now(),
  primary key (rule, value)
);
create index if not exists overrides_a on idr.overrides (a_system, a_key) where revoked_at is null;
create index if not exists overrides_b on idr.overrides (b_system, b_key) where revoked_at is null;

-- The key values of one union record.
create or replace function idr.keys_of(p_system text, p_key text)
returns table(rule text, value text) language sql stable as $$
  select k.rule, k.value
    from l1.member_union u
   cross join lateral (values
      ('phone', case when u.phone_identifies is true and nullif(btrim((u.phone)::text), '') is not null
        then nullif(btrim((u.phone)::text), '') end),
      ('email', case when nullif(btrim((u.email)::text), '') is not null
        then nullif(btrim((u.email)::text), '') end),
      ('name_birth', case when nullif(btrim((u.name)::text), '') is not null and nullif(btrim((u.birth_date)::text), '') is not null
        then concat_ws(chr(31), nullif(btrim((u.name)::text), ''), nullif(btrim((u.birth_date)::text), '')) end)
    ) k(rule, value)
   where u.system = p_system and u.source_key = p_key and k.value is not null
  union all
  select 'must_link', o.id::text
    from idr.overrides o
   where o.kind = 'must_link' and o.revoked_at is null
     and ((o.a_system = p_system and o.a_key = p_key) or (o.b_system = p_system and o.b_key = p_key))
     and exists (select 1 from l1.member_union u where u.system = p_system and u.source_key = p_key)
$$;

-- max_clusters of a rule (null: no limit).
create or replace function idr.max_clusters(p_rule text) returns int
language sql immutable as $$
  select case p_rule when '' then null::int
    when 'phone' then 5
    when 'email' then 5
  end
$$;

-- Transaction-scoped advisory locks, always taken in one order: key values
-- (phase 0) before clusters (phase 1), each by id. A lock that sorts below
-- one this transaction already holds (a later event of a batch) is only
-- tried: waiting for it could deadlock, so the transaction is retried.
create or replace function idr.lock(p_phase int, p_ids int[]) returns void
language plpgsql as $$
declare
  v_guc   text   := 'pgchain.idlock_' || md5('idr');
  v_class int    := hashtext('pgchain.identity.' || 'idr' || '.' || p_phase);
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
      raise exception '%: identity lock out of order (a batch touches a cluster another transaction holds); retrying', 'idr'
        using errcode = '40001';
    end if;
  end loop;
  perform set_config(v_guc, v_top::text, true);
end $$;

create or replace function idr.cluster_lock_id(p_cluster bigint) returns int
language sql immutable as $$ select (p_cluster % 2147483647)::int $$;

-- The clusters a record reaches: its own and those of every record that
-- shares one of its linking key values.
create or replace function idr.reach(p_seq bigint) returns bigint[]
language sql stable as $$
  select coalesce(array_agg(distinct c order by c), '{}') from (
    select r.cluster_id c from idr.records r where r.seq = p_seq
    union all
    select r.cluster_id
      from idr.keys k
      join idr.keys b on b.rule = k.rule and b.value = k.value and b.links and b.seq <> p_seq
      join idr.records r on r.seq = b.seq
     where k.seq = p_seq and k.links
  ) x
$$;

-- Connected components of the records p_seqs (whole clusters, so closed
-- under linking edges), leaving out one key value if given. comp is the
-- component's oldest record.
create or replace function idr.components(p_seqs bigint[], p_rule text default null, p_value text default null)
returns table(seq bigint, comp bigint) language plpgsql stable as $$
declare
  v_left bigint[] := p_seqs;
  v_seed bigint;
  v_comp bigint[];
begin
  loop
    select min(x) into v_seed from unnest(v_left) x;
    exit when v_seed is null;
    with recursive c(s) as (
      select v_seed
      union
      select b.seq
        from c
        join idr.keys k on k.seq = c.s and k.links
        join idr.keys b on b.rule = k.rule and b.value = k.value and b.links
       where p_rule is null or k.rule <> p_rule or k.value <> p_value
    )
    select array_agg(c.s) into v_comp from c;
    return query select x, v_seed from unnest(v_comp) x;
    v_left := array(select x from unnest(v_left) x except select y from unnest(v_comp) y);
  end loop;
end $$;

-- link_record's steps, each a function of its own. The records of a
-- recomputation travel as parallel arrays (seq[i], part[i], before[i],
-- after[i]): a handful of rows, and the planner knows no statistics of a
-- temp table.

-- Locks the key values (phase 0) the record has now and those it had, so
-- two records that bring the same new value one after the other see each
-- other.
create or replace function idr.lock_key_values(p_seq bigint, p_rules text[], p_values text[]) returns void
language plpgsql as $$
begin
  perform idr.lock(0, array(
    select hashtext(x.rule || chr(31) || x.value)
      from (select n.rule, n.value from unnest(p_rules, p_values) n(rule, value)
            union
            select k.rule, k.value from idr.keys k where k.seq = p_seq) x));
end $$;

-- Deletes the record's edges to the values it no longer has. True when one
-- of them linked: its cluster may come apart.
create or replace function idr.drop_edges(p_seq bigint, p_rules text[], p_values text[]) returns boolean
language plpgsql as $$
declare
  v_dropped_linking boolean;
begin
  with gone as (
    delete from idr.keys k
     where k.seq = p_seq
       and not exists (select 1 from unnest(p_rules, p_values) n(rule, value)
                        where n.rule = k.rule and n.value = k.value)
    returning k.links)
  select coalesce(bool_or(gone.links), false) into v_dropped_linking from gone;
  return v_dropped_linking;
end $$;

-- Adds the record's edges to its new values (an edge to a generic value
-- never links). Returns the linking edges added, as rule || chr(31) || value.
create or replace function idr.add_edges(p_seq bigint, p_rules text[], p_values text[]) returns text[]
language plpgsql as $$
declare
  v_added_links text[];
begin
  with added as (
    insert into idr.keys (rule, value, seq, links)
    select n.rule, n.value, p_seq,
           not exists (select 1 from idr.generic g where g.rule = n.rule and g.value = n.value)
      from unnest(p_rules, p_values) n(rule, value)
    on conflict do nothing
    returning rule, value, links)
  select coalesce(array_agg(added.rule || chr(31) || added.value), '{}') into v_added_links
    from added where added.links;
  return v_added_links;
end $$;

-- Locks the clusters the record reaches (phase 1), in order; if one moved
-- (merged or split by another transaction) while this one waited, locks
-- the new ones too. Returns the clusters the record reaches, all locked.
create or replace function idr.lock_clusters(p_seq bigint) returns bigint[]
language plpgsql as $$
declare
  v_locked  bigint[] := idr.reach(p_seq);
  v_reached bigint[];
begin
  loop
    perform idr.lock(1, array(select idr.cluster_lock_id(c) from unnest(v_locked) c));
    v_reached := idr.reach(p_seq);
    exit when v_reached <@ v_locked;
    v_locked := array(select distinct c from unnest(v_locked || v_reached) c order by c);
  end loop;
  return v_reached;
end $$;

-- The linking edges just added whose value now has more bearers than its
-- rule allows clusters: counts the clusters the bearers among p_records
-- would form without the value; too many, and it is generic from now on
-- (recorded in generic, its edges stop linking). True when a value became
-- generic: clusters may come apart.
create or replace function idr.mark_generic(p_added text[], p_records bigint[]) returns boolean
language plpgsql as $$
declare
  v_edge     record;
  v_bearers  int;
  v_clusters int;
  v_marked   boolean := false;
begin
  for v_edge in
    select split_part(a, chr(31), 1) as rule, substr(a, strpos(a, chr(31)) + 1) as value
      from unnest(p_added) a
  loop
    continue when idr.max_clusters(v_edge.rule) is null;
    -- a value a steward released after review is never generic again
    continue when exists (select 1 from idr.released x where x.rule = v_edge.rule and x.value = v_edge.value);
    select count(*) into v_bearers from idr.keys b
     where b.rule = v_edge.rule and b.value = v_edge.value and b.links;
    continue when v_bearers <= idr.max_clusters(v_edge.rule);
    select count(distinct c.comp) into v_clusters
      from idr.components(p_records, v_edge.rule, v_edge.value) c
      join idr.keys b on b.seq = c.seq and b.rule = v_edge.rule and b.value = v_edge.value and b.links;
    if v_clusters > idr.max_clusters(v_edge.rule) then
      insert into idr.generic (rule, value, clusters, records)
      select v_edge.rule, v_edge.value, v_clusters, count(*)
        from idr.keys b where b.rule = v_edge.rule and b.value = v_edge.value
      on conflict do nothing;
      update idr.keys b set links = false
       where b.rule = v_edge.rule and b.value = v_edge.value and b.links;
      v_marked := true;
    end if;
  end loop;
  return v_marked;
end $$;

-- Pure growth (no linking edge dropped): the record joins the one cluster
-- it reaches, or merges those it reaches into the oldest (smallest) id, or
-- starts a new one. Returns link_record's result.
create or replace function idr.join_clusters(p_seq bigint, p_system text, p_key text, p_new boolean, p_clusters bigint[])
returns jsonb language plpgsql as $$
declare
  v_survivor bigint := coalesce(p_clusters[1], nextval('idr.cluster_ids'::regclass));
begin
  update idr.records r set cluster_id = v_survivor where r.cluster_id = any(p_clusters) and r.cluster_id <> v_survivor;
  if p_new then
    insert into idr.records (seq, system, source_key, cluster_id) values (p_seq, p_system, p_key, v_survivor);
  end if;
  if cardinality(p_clusters) > 1 then
    insert into idr.history (kind, cluster_id, clusters, system, source_key)
    values ('merge', v_survivor, array(select c from unnest(p_clusters) c where c <> v_survivor), p_system, p_key);
  end if;
  return jsonb_build_object(
    'clusters', to_jsonb(array(select distinct c from unnest(p_clusters || v_survivor) c order by c)),
    'merged', coalesce((select jsonb_object_agg(c::text, v_survivor) from unnest(p_clusters) c where c <> v_survivor), '{}'::jsonb),
    'split', '{}'::jsonb);
end $$;

-- A merge that would exceed max_cluster_size: when the record's part
-- (p_seqs, p_parts: the components of the records involved) is larger than
-- the maximum and holds records of other clusters than the record's own,
-- the record's new links to other clusters are held back (links = false)
-- and recorded in review. True when links were held: the parts change.
create or replace function idr.hold_oversize_links(
  p_seq bigint, p_system text, p_key text, p_own_cluster bigint, p_added text[], p_clusters bigint[],
  p_seqs bigint[], p_parts bigint[], p_members bigint[], p_before bigint[])
returns boolean language plpgsql as $$
declare
  v_own_part bigint := (select x.part from unnest(p_seqs, p_parts) x(seq, part) where x.seq = p_seq);
  v_size     int;
begin
  select count(*) into v_size
    from unnest(p_seqs, p_parts) c(seq, part)
   where c.part = v_own_part;
  if v_size > 50
     and (select count(distinct b.x) from unnest(p_seqs, p_parts) c(seq, part)
            join unnest(p_members, p_before) b(seq, x) on b.seq = c.seq
           where c.part = v_own_part
             and b.x is distinct from p_own_cluster) > 0
  then
    with held as (
      update idr.keys k set links = false
       where k.seq = p_seq and k.links and (k.rule || chr(31) || k.value) = any(p_added)
         and exists (select 1 from idr.keys b join idr.records r on r.seq = b.seq
                      where b.rule = k.rule and b.value = k.value and b.links and b.seq <> p_seq
                        and r.cluster_id is distinct from p_own_cluster)
      returning k.rule, k.value)
    insert into idr.review (reason, system, source_key, rule, value, clusters, size)
    select 'max_cluster_size', p_system, p_key, held.rule, held.value, p_clusters, v_size from held;
    return true;
  end if;
  return false;
end $$;

-- The cluster id of each record after a recomputation (p_seqs ordered by
-- seq, p_parts its part, p_before its cluster before, null for a new
-- record): a part keeps the smallest id among the old clusters whose oldest
-- record it holds; every other part gets a new id, oldest part first.
create or replace function idr.surviving_ids(p_seqs bigint[], p_parts bigint[], p_before bigint[]) returns bigint[]
language plpgsql as $$
declare
  v_after bigint[];
  v_part  record;
  v_id    bigint;
begin
  with i as (select * from unnest(p_seqs, p_parts, p_before) with ordinality i(seq, part, before, ord)),
  oldest as (
    select i.before, min(i.seq) as seq from i where i.before is not null group by i.before),
  keeps as (
    select i.part, min(o.before) as id from oldest o join i on i.seq = o.seq group by i.part)
  select array_agg(keeps.id order by i.ord) into v_after from i left join keeps on keeps.part = i.part;
  for v_part in
    select distinct i.part from unnest(p_parts, v_after) i(part, after) where i.after is null order by i.part
  loop
    v_id := nextval('idr.cluster_ids'::regclass);
    select array_agg(case when i.part = v_part.part then v_id else i.after end order by i.ord) into v_after
      from unnest(p_parts, v_after) with ordinality i(part, after, ord);
  end loop;
  return v_after;
end $$;

-- History of a recomputation: a part holding several old clusters is a
-- merge; an old cluster spread over several parts is a split.
create or replace function idr.record_history(p_system text, p_key text,
  p_seqs bigint[], p_parts bigint[], p_before bigint[], p_after bigint[]) returns void
language plpgsql as $$
begin
  insert into idr.history (kind, cluster_id, clusters, system, source_key)
  select 'merge', i.after, array_agg(distinct i.before order by i.before) filter (where i.before <> i.after), p_system, p_key
    from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
   group by i.after
  having count(distinct i.before) > 1;
  insert into idr.history (kind, cluster_id, clusters, system, source_key)
  select 'split', i.before, array_agg(distinct i.after order by i.after) filter (where i.after <> i.before), p_system, p_key
    from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
   where i.before is not null
   group by i.before
  having count(distinct i.after) > 1;
end $$;

-- link_record's result for a recomputation of p_clusters.
create or replace function idr.recomputed(p_clusters bigint[],
  p_seqs bigint[], p_parts bigint[], p_before bigint[], p_after bigint[]) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'clusters', to_jsonb(array(
       select distinct c from (select unnest(p_clusters) union all select unnest(p_after)) x(c)
        where c is not null order by c)),
    -- an old id that is gone: merged into the part holding its oldest record
    'merged', coalesce((
       select jsonb_object_agg(o.before::text, i.after)
         from (select i.before, min(i.seq) seq from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after) where i.before is not null group by i.before) o
         join unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after) on i.seq = o.seq
        where not exists (select 1 from unnest(p_after) j(after) where j.after = o.before)), '{}'::jsonb),
    -- a new id holding old records: split from the oldest of their clusters
    'split', coalesce((
       select jsonb_object_agg(n.after::text, n.from_id)
         from (select i.after, min(i.before) from_id from unnest(p_seqs, p_parts, p_before, p_after) i(seq, part, before, after)
                where not (i.after = any(p_clusters)) group by i.after) n
        where n.from_id is not null), '{}'::jsonb))
$$;

-- General path: recomputes the components inside the clusters involved
-- (p_members, with p_before their clusters before this event), gives them
-- ids by the survivor rule, and records merges and splits. Returns
-- link_record's result.
create or replace function idr.recompute_clusters(
  p_seq bigint, p_system text, p_key text, p_present boolean, p_new boolean, p_own_cluster bigint,
  p_added text[], p_clusters bigint[], p_members bigint[], p_before bigint[])
returns jsonb language plpgsql as $$
declare
  v_part_seqs bigint[];  -- components(p_members) as returned: record part_seqs[i] is in part parts[i]
  v_parts     bigint[];
  v_seqs      bigint[];  -- the same, ordered by record, with each record's cluster before and after
  v_part_of   bigint[];
  v_before    bigint[];
  v_after     bigint[];
begin
  select array_agg(c.seq), array_agg(c.comp) into v_part_seqs, v_parts from idr.components(p_members) c;
  if p_present
     and idr.hold_oversize_links(p_seq, p_system, p_key, p_own_cluster, p_added, p_clusters,
           v_part_seqs, v_parts, p_members, p_before)
  then
    select array_agg(c.seq), array_agg(c.comp) into v_part_seqs, v_parts from idr.components(p_members) c;
  end if;
  select array_agg(c.seq order by c.seq), array_agg(c.part order by c.seq), array_agg(b.x order by c.seq)
    into v_seqs, v_part_of, v_before
    from unnest(v_part_seqs, v_parts) c(seq, part)
    join unnest(p_members, p_before) b(seq, x) on b.seq = c.seq;
  v_after := idr.surviving_ids(v_seqs, v_part_of, v_before);

  update idr.records r set cluster_id = i.after
    from unnest(v_seqs, v_after) i(seq, after) where i.seq = r.seq and r.cluster_id <> i.after;
  if p_present and p_new then
    insert into idr.records (seq, system, source_key, cluster_id)
    select p_seq, p_system, p_key, i.after from unnest(v_seqs, v_after) i(seq, after) where i.seq = p_seq;
  end if;
  perform idr.record_history(p_system, p_key, v_seqs, v_part_of, v_before, v_after);
  return idr.recomputed(p_clusters, v_seqs, v_part_of, v_before, v_after);
end $$;

-- Links one union record as it is now (inserted, updated or deleted) and
-- returns what changed: {clusters: [every cluster id touched], merged:
-- {gone_id: survivor_id}, split: {new_id: from_id}}.
--   Ids: a merge keeps the oldest (smallest) cluster id. After a split, the
--   part holding the oldest record keeps the id and every other part gets a
--   new one. In general, a resulting cluster keeps the smallest id among
--   the clusters whose oldest remaining record it holds, else a new id.
--   Locks: key values first, then clusters (see lock).
create or replace function idr.link_record(p_system text, p_key text) returns jsonb
language plpgsql as $$
declare
  v_rules       text[];            -- the record's key values now: (rules[i], values[i])
  v_values      text[];
  v_present     boolean;           -- the record is in the union (not deleted)
  v_seq         bigint;            -- the record in the graph
  v_new         boolean := false;  -- the graph sees the record for the first time
  v_own_cluster bigint;            -- its cluster before this event (null: new)
  v_dropped     boolean;           -- a linking edge went: clusters may come apart
  v_added       text[];            -- the linking edges added, rule || chr(31) || value
  v_clusters    bigint[];          -- the clusters the record reaches, locked
  v_members     bigint[];          -- the records of those clusters ...
  v_before      bigint[];          -- ... and the cluster each was in before this event
begin
  select coalesce(array_agg(k.rule order by k.rule, k.value), '{}'),
         coalesce(array_agg(k.value order by k.rule, k.value), '{}')
    into v_rules, v_values
    from idr.keys_of(p_system, p_key) k;
  v_present := exists (select 1 from l1.member_union u where u.system = p_system and u.source_key = p_key);
  select r.seq into v_seq from idr.records r where r.system = p_system and r.source_key = p_key;
  if v_seq is null and not v_present then
    return jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;

  perform idr.lock_key_values(v_seq, v_rules, v_values);
  if v_seq is null then
    v_seq := nextval('idr.record_seq'::regclass);
    v_new := true;
  end if;
  v_dropped := idr.drop_edges(v_seq, v_rules, v_values);
  v_added := idr.add_edges(v_seq, v_rules, v_values);
  v_clusters := idr.lock_clusters(v_seq);
  select r.cluster_id into v_own_cluster from idr.records r where r.seq = v_seq;

  -- Nothing structural changed: the record stays where it is.
  if v_present and not v_new and not v_dropped and v_clusters = array[v_own_cluster] and v_added = '{}' then
    return jsonb_build_object('clusters', to_jsonb(v_clusters), 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;

  select coalesce(array_agg(r.seq order by r.seq), '{}'), coalesce(array_agg(r.cluster_id order by r.seq), '{}')
    into v_members, v_before
    from idr.records r where r.cluster_id = any(v_clusters) and r.seq <> v_seq;
  -- A record alone in its cluster that reaches no other: still alone.
  if v_present and not v_new and v_clusters = array[v_own_cluster] and v_members = '{}' then
    return jsonb_build_object('clusters', to_jsonb(v_clusters), 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  end if;
  if not v_present then
    delete from idr.records r where r.seq = v_seq;
  elsif v_own_cluster is not null then
    v_members := v_members || v_seq;
    v_before := v_before || v_own_cluster;
  end if;

  if idr.mark_generic(v_added, v_members || case when v_new and v_present then array[v_seq] else '{}' end) then
    v_dropped := true;
  end if;
  if v_present and v_new then
    v_members := v_members || v_seq;
    v_before := v_before || null::bigint;
  end if;

  if v_present and not v_dropped
     -- a merge beyond max_cluster_size: the general path holds the links back
     and not (cardinality(v_members) > 50
              and (cardinality(v_clusters) > 1 or (v_new and cardinality(v_clusters) = 1)))
  then
    return idr.join_clusters(v_seq, p_system, p_key, v_new, v_clusters);
  end if;
  return idr.recompute_clusters(v_seq, p_system, p_key, v_present, v_new, v_own_cluster,
    v_added, v_clusters, v_members, v_before);
end $$;

-- A key value of a rule by column, clean: {column: value}.
create or replace function idr.matched(p_rule text, p_value text) returns jsonb
language sql immutable as $$
  select case p_rule
    when 'must_link' then jsonb_build_object('override', p_value::bigint)
    when 'phone' then jsonb_build_object('phone', p_value)
    when 'email' then jsonb_build_object('email', p_value)
    when 'name_birth' then jsonb_build_object('name', split_part(p_value, chr(31), 1), 'birth_date', split_part(p_value, chr(31), 2))
  end
$$;

-- Why are these two records one customer: the chain of links between them,
-- hop by hop, each with the rule that made it and the values it matched
-- ({column: value}), every rule the hop's two records match on, and when
-- the link was made. No rows: they are not linked.
drop function if exists idr.explain(text, text, text, text);
create function idr.explain(a_system text, a_key text, b_system text, b_key text)
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
  select r.seq into v_a from idr.records r where r.system = a_system and r.source_key = a_key;
  select r.seq into v_b from idr.records r where r.system = b_system and r.source_key = b_key;
  if v_a is null or v_b is null or v_a = v_b then
    return;
  end if;
  v_seen := array[v_a]; v_parent := array[null::bigint]; v_rule := array[null::text]; v_value := array[null::text];
  v_frontier := array[v_a];
  while not (v_b = any(v_seen)) and cardinality(v_frontier) > 0 loop
    with step as (
      select distinct on (b.seq) b.seq, k.seq as parent, k.rule, k.value
        from idr.keys k
        join idr.keys b on b.rule = k.rule and b.value = k.value and b.links
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
      select v_hops, f.system, f.source_key, v_rule[v_at], idr.matched(v_rule[v_at], v_value[v_at]), t.system, t.source_key,
             array(select distinct x.rule from idr.keys x
                     join idr.keys y on y.rule = x.rule and y.value = x.value and y.links
                    where x.seq = f.seq and y.seq = t.seq and x.links order by 1),
             (select greatest(x.made_at, y.made_at) from idr.keys x, idr.keys y
               where x.rule = v_rule[v_at] and x.value = v_value[v_at] and x.seq = f.seq
                 and y.rule = x.rule and y.value = x.value and y.seq = t.seq)
        from idr.records f, idr.records t
       where f.seq = v_parent[v_at] and t.seq = v_seen[v_at];
  end loop;
end $$;

-- Every link of the cluster of one record, for a steward: each key value
-- its records share, with the rule, the values ({column: value}), the
-- records that bear it here, and when the last of them was linked. state:
-- `links`; `held` (a merge beyond max_cluster_size, see review) or
-- `generic` (shared by too many clusters), with the bearers in other
-- clusters counted in `elsewhere`.
create or replace function idr.explain_cluster(p_system text, p_key text)
returns table(cluster_id bigint, rule text, matched jsonb, state text, records jsonb, elsewhere bigint, linked_at timestamptz)
language sql stable as $$
  with mine as (
    select r.seq, r.system, r.source_key, r.cluster_id
      from idr.records r
     where r.cluster_id = (select o.cluster_id from idr.records o where o.system = p_system and o.source_key = p_key)),
  edges as (
    select m.cluster_id, k.rule, k.value, k.made_at, m.seq, m.system, m.source_key,
           case when k.links then 'links'
                when exists (select 1 from idr.generic g where g.rule = k.rule and g.value = k.value) then 'generic'
                else 'held' end as state
      from mine m join idr.keys k on k.seq = m.seq)
  select e.cluster_id, e.rule, idr.matched(e.rule, e.value), e.state,
         jsonb_agg(jsonb_build_object('system', e.system, 'source_key', e.source_key) order by e.system, e.source_key),
         (select count(*) from idr.keys b
           where b.rule = e.rule and b.value = e.value and b.seq not in (select m.seq from mine m)),
         max(e.made_at)
    from edges e
   group by e.cluster_id, e.rule, e.value, e.state
  having e.state <> 'links' or count(*) > 1
   order by max(e.made_at), e.rule, e.value
$$;

-- Two of link_record's answers as one: every cluster either touched, and
-- both merges and splits (several records re-linked in one go).
create or replace function idr.both_changes(a jsonb, b jsonb) returns jsonb
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
create or replace function idr.relink_records(p_records text[], p_cause jsonb) returns jsonb
language plpgsql as $$
declare
  v_out jsonb := jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
  v_one jsonb;
  v_i   int;
begin
  for v_i in 1 .. coalesce(array_length(p_records, 1), 0) loop
    v_one := idr.link_record(p_records[v_i][1], p_records[v_i][2]);
    v_out := idr.both_changes(v_out, v_one);
  end loop;
  if to_regprocedure(format('%I.unify(bigint[], jsonb, jsonb)', 'idr')) is not null then
    execute format('select %I.unify($1, $2, $3)', 'idr')
      using array(select jsonb_array_elements_text(v_out->'clusters')::bigint), v_out->'merged', v_out->'split';
  end if;
  if to_regprocedure(format('%I.publish(bigint[], jsonb)', 'idr')) is not null then
    execute format('select %I.publish($1, $2)', 'idr')
      using array(select jsonb_array_elements_text(v_out->'clusters')::bigint), p_cause;
  end if;
  return v_out;
end $$;

-- A steward links two records by hand: they are one entity from now on,
-- per event and in rebuild, until the override is revoked. Who and why are
-- kept. Returns what changed, with the override's id.
create or replace function idr.must_link(a_system text, a_key text, b_system text, b_key text, p_by text, p_why text)
returns jsonb language plpgsql as $$
declare
  v_id bigint;
begin
  if nullif(btrim(p_by), '') is null or nullif(btrim(p_why), '') is null then
    raise exception '%: an override needs who makes it and why', 'idr' using errcode = '22023';
  end if;
  if (a_system, a_key) = (b_system, b_key) then
    raise exception '%: a record is linked to itself already', 'idr' using errcode = '22023';
  end if;
  if not exists (select 1 from idr.records r where r.system = a_system and r.source_key = a_key) then
    raise exception '%: no record %:% in the graph', 'idr', a_system, a_key using errcode = '22023';
  end if;
  if not exists (select 1 from idr.records r where r.system = b_system and r.source_key = b_key) then
    raise exception '%: no record %:% in the graph', 'idr', b_system, b_key using errcode = '22023';
  end if;
  insert into idr.overrides (kind, a_system, a_key, b_system, b_key, made_by, why)
  values ('must_link', a_system, a_key, b_system, b_key, p_by, p_why)
  returning id into v_id;
  return idr.relink_records(array[[a_system, a_key], [b_system, b_key]],
           jsonb_build_object('override', v_id, 'by', p_by))
         || jsonb_build_object('override', v_id);
end $$;

-- Releases a generic value after review: it links again from now on (its
-- bearers' clusters merge), and is never made generic again, per event or
-- by rebuild. Returns what changed.
create or replace function idr.release_value(p_rule text, p_value text, p_by text, p_why text) returns jsonb
language plpgsql as $$
declare
  v_records text[];
begin
  if nullif(btrim(p_by), '') is null or nullif(btrim(p_why), '') is null then
    raise exception '%: a release needs who makes it and why', 'idr' using errcode = '22023';
  end if;
  delete from idr.generic g where g.rule = p_rule and g.value = p_value;
  if not found then
    raise exception '%: % value % is not generic', 'idr', p_rule, p_value using errcode = '22023';
  end if;
  insert into idr.released (rule, value, released_by, why) values (p_rule, p_value, p_by, p_why);
  update idr.keys k set links = true where k.rule = p_rule and k.value = p_value;
  select coalesce(array_agg(array[r.system, r.source_key] order by r.seq), '{}') into v_records
    from idr.keys k join idr.records r on r.seq = k.seq
   where k.rule = p_rule and k.value = p_value;
  return idr.relink_records(v_records, jsonb_build_object('released', jsonb_build_object('rule', p_rule, 'value', p_value), 'by', p_by));
end $$;

-- Releases a link max_cluster_size held (see review) after review: the
-- record links through that value again, and its clusters merge.
create or replace function idr.release_held(p_system text, p_key text, p_rule text, p_value text, p_by text) returns jsonb
language plpgsql as $$
begin
  update idr.keys k set links = true
    from idr.records r
   where r.system = p_system and r.source_key = p_key and k.seq = r.seq
     and k.rule = p_rule and k.value = p_value and not k.links
     and not exists (select 1 from idr.generic g where g.rule = k.rule and g.value = k.value);
  if not found then
    raise exception '%: no held link of %:% by % value %', 'idr', p_system, p_key, p_rule, p_value using errcode = '22023';
  end if;
  return idr.relink_records(array[[p_system, p_key]],
           jsonb_build_object('released_hold', jsonb_build_object('rule', p_rule, 'value', p_value), 'by', p_by));
end $$;

-- Revokes an override: its records are re-linked without it.
create or replace function idr.revoke_override(p_id bigint, p_by text) returns jsonb
language plpgsql as $$
declare
  v_o idr.overrides;
begin
  update idr.overrides o set revoked_at = now(), revoked_by = p_by
   where o.id = p_id and o.revoked_at is null
  returning * into v_o;
  if v_o.id is null then
    raise exception '%: no override % in force', 'idr', p_id using errcode = '22023';
  end if;
  return idr.relink_records(array[[v_o.a_system, v_o.a_key], [v_o.b_system, v_o.b_key]],
           jsonb_build_object('revoked_override', p_id, 'by', p_by));
end $$;

-- rebuild's steps, each a function of its own. They share the transaction's
-- temp tables: identity_src (every union record, numbered), identity_edges
-- and identity_labels (the linking edges and each record's component), and
-- identity_candidates (the values that may be generic).

-- Numbers every record of the union, oldest source change first, into
-- identity_src, and moves record_seq past them.
create or replace function idr.rebuild_number_records() returns void
language plpgsql as $$
declare
  v_first_seq bigint;
begin
  select coalesce(nextval('idr.record_seq'::regclass), 0) into v_first_seq;
  create temp table identity_src on commit drop as
  select v_first_seq + row_number() over (order by u.created_ts_ms nulls last, u.system, u.source_key) as seq,
         u.system, u.source_key
    from l1.member_union u;
  perform setval('idr.record_seq'::regclass, v_first_seq + (select count(*) from identity_src));
end $$;

-- The key values of every record (edges, linking), then the values with
-- more bearers than their rule's max_clusters: candidates for generic
-- (identity_candidates), their edges not linking until the components
-- without any of them decide.
create or replace function idr.rebuild_keys() returns void
language plpgsql as $$
begin
  insert into idr.keys (rule, value, seq, links)
  select k.rule, k.value, x.seq, true
    from identity_src x
    join l1.member_union u on u.system = x.system and u.source_key = x.source_key
   cross join lateral (values
      ('phone', case when u.phone_identifies is true and nullif(btrim((u.phone)::text), '') is not null
        then nullif(btrim((u.phone)::text), '') end),
      ('email', case when nullif(btrim((u.email)::text), '') is not null
        then nullif(btrim((u.email)::text), '') end),
      ('name_birth', case when nullif(btrim((u.name)::text), '') is not null and nullif(btrim((u.birth_date)::text), '') is not null
        then concat_ws(chr(31), nullif(btrim((u.name)::text), ''), nullif(btrim((u.birth_date)::text), '')) end)
    ) k(rule, value)
   where k.value is not null;
  insert into idr.keys (rule, value, seq, links)
  select 'must_link', o.id::text, x.seq, true
    from idr.overrides o
    join identity_src x on (x.system = o.a_system and x.source_key = o.a_key)
                        or (x.system = o.b_system and x.source_key = o.b_key)
   where o.kind = 'must_link' and o.revoked_at is null
  on conflict do nothing;
  analyze idr.keys;

  create temp table identity_candidates on commit drop as
  select k.rule, k.value from idr.keys k
   where idr.max_clusters(k.rule) is not null
     and not exists (select 1 from idr.released x where x.rule = k.rule and x.value = k.value)
   group by k.rule, k.value having count(*) > idr.max_clusters(k.rule);
  update idr.keys k set links = false from identity_candidates c where c.rule = k.rule and c.value = k.value;
end $$;

-- Connected components of the linking edges into identity_labels (seq,
-- label: the component's smallest seq; a record with no linking edge has
-- no row). identity_edges: the values with two or more linking bearers,
-- numbered (kid).
create or replace function idr.rebuild_label_components() returns void
language plpgsql as $$
declare
  v_lowered bigint;
begin
  truncate identity_edges, identity_labels;
  insert into identity_edges (seq, kid, rule, value)
  select k.seq, dense_rank() over (order by k.rule, k.value), k.rule, k.value
    from idr.keys k
   where k.links and (k.rule, k.value) in (
     select k2.rule, k2.value from idr.keys k2 where k2.links group by 1, 2 having count(*) > 1);
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
create or replace function idr.rebuild_settle_candidates() returns boolean
language plpgsql as $$
begin
  insert into idr.generic (rule, value, clusters, records)
  select c.rule, c.value, count(distinct coalesce(l.label, k.seq)), count(*)
    from identity_candidates c
    join idr.keys k on k.rule = c.rule and k.value = c.value
    left join identity_labels l on l.seq = k.seq
   group by c.rule, c.value
  having count(distinct coalesce(l.label, k.seq)) > idr.max_clusters(c.rule);
  update idr.keys k set links = true
    from identity_candidates c
   where c.rule = k.rule and c.value = k.value
     and not exists (select 1 from idr.generic g where g.rule = c.rule and g.value = c.value);
  return found;
end $$;

-- The records, one new cluster id per component, in the order of their
-- oldest records.
create or replace function idr.rebuild_number_clusters() returns void
language plpgsql as $$
declare
  v_components bigint;
  v_first_id   bigint;
begin
  select count(distinct coalesce(l.label, x.seq)) into v_components
    from identity_src x left join identity_labels l on l.seq = x.seq;
  select nextval('idr.cluster_ids'::regclass) into v_first_id;
  if v_components > 1 then
    perform setval('idr.cluster_ids'::regclass, v_first_id + v_components - 1);
  end if;
  insert into idr.records (seq, system, source_key, cluster_id)
  select x.seq, x.system, x.source_key,
         v_first_id - 1 + dense_rank() over (order by coalesce(l.label, x.seq))
    from identity_src x left join identity_labels l on l.seq = x.seq;
  analyze idr.records;
end $$;

-- Bulk path: builds the whole graph from the union at once (the initial
-- load, or after a change of rules). Cluster ids are new; old ones are
-- never reused.
create or replace procedure idr.rebuild() language plpgsql as $$
declare
  v_round int;
begin
  perform pg_advisory_xact_lock(hashtext('pgchain.identity.' || 'idr' || '.rebuild'));
  lock table idr.records, idr.keys in exclusive mode;
  truncate idr.records, idr.keys, idr.generic;

  perform idr.rebuild_number_records();
  perform idr.rebuild_keys();
  create temp table identity_edges (seq bigint, kid int, rule text, value text) on commit drop;
  create temp table identity_labels (seq bigint primary key, label bigint) on commit drop;
  -- Components without the candidates; then, if some candidates are not
  -- generic after all, again with them.
  for v_round in 1..2 loop
    perform idr.rebuild_label_components();
    exit when v_round = 2;
    exit when not idr.rebuild_settle_candidates();
    drop index if exists identity_edges_seq_idx;
    drop index if exists identity_edges_kid_idx;
  end loop;
  perform idr.rebuild_number_clusters();

  insert into idr.review (reason, system, source_key, rule, value, clusters, size)
  select 'rebuild_oversize', '', '', '', '', array[r.cluster_id], count(*)
    from idr.records r group by r.cluster_id having count(*) > 50;
  insert into idr.history (kind, cluster_id, clusters) values ('rebuild', null, '{}');
end $$;

-- L2 link step: re-links the record the previous step wrote (`ev.record`).
create or replace procedure idr.link_member(inout ev jsonb) language plpgsql as $$
declare
  v_rec jsonb := ev->'record';
  v_out jsonb;
  v_one jsonb;
  v_key text;
begin
  if v_rec is null or v_rec->>'system' is null then
    raise exception '%: the event has no `record` {system, source_key}; an l1_cleanse step must come first', 'idr.link_member'
      using errcode = '22023';
  end if;
  if (v_rec->>'truncated')::boolean is true then
    -- GUARD: a truncated source unlinks every record it had.
    v_out := jsonb_build_object('clusters', '[]'::jsonb, 'merged', '{}'::jsonb, 'split', '{}'::jsonb);
    for v_key in select r.source_key from idr.records r where r.system = v_rec->>'system' order by r.seq loop
      v_one := idr.link_record(v_rec->>'system', v_key);
      v_out := idr.both_changes(v_out, v_one);
    end loop;
  else
    if v_rec->>'source_key' is null then
      raise exception '%: `record` has no source_key', 'idr.link_member' using errcode = '22023';
    end if;
    v_out := idr.link_record(v_rec->>'system', v_rec->>'source_key');
  end if;
  ev := ev || jsonb_build_object('identity', v_out);
end $$;
