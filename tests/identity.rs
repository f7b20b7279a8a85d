//! Identity resolution: the identity_link, identity_unify and
//! identity_publish templates on real PostgreSQL. The property test checks
//! the incremental clusters against connected components computed from
//! scratch in Rust; the named scenarios check chains, splits, the guards,
//! explain, and two transactions on one cluster at once.

mod common;

use common::{TestDb, install};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::Client;
use tokio_postgres::types::Json;

/// A record of the union: (system, source_key).
type Id = (String, String);
/// A key value: (rule, value).
type KeyValue = (String, String);

/// A union table like l1_cleanse's, with the columns the rules use.
fn union_sql(schema: &str) -> String {
    format!(
        "create schema {schema};
         create table {schema}.u (system text not null, source_key text not null, name text, phone text,
           phone_ok boolean default true, email text, birth_date text, source_ts_ms bigint, created_ts_ms bigint,
           primary key (system, source_key));"
    )
}

const RULES: &str = "rules:\n  phone: {columns: [phone], max_clusters: 3, when: phone_ok}\n  email: {columns: [email]}\n  name_birth: {columns: [name, birth_date]}";

/// One identity graph in `schema` of a test database.
struct Graph {
    client: Client,
    schema: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Rec {
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    birth: Option<String>,
}

impl Graph {
    async fn new(db: &TestDb, schema: &str, extra: &str) -> Graph {
        db.exec(&union_sql(schema)).await;
        let vars = format!("schema: {schema}\nsource: {schema}.u\n{RULES}\n{extra}");
        install(db, &format!("{schema}.link"), "identity_link", &vars).await;
        Graph {
            client: db.client().await,
            schema: schema.to_string(),
        }
    }

    /// Writes the union row, then runs the link step for it.
    async fn put(&self, system: &str, key: &str, r: &Rec) -> Value {
        write_union(&self.client, &self.schema, system, key, Some(r), None)
            .await
            .unwrap();
        self.link(system, key).await.unwrap()
    }

    async fn delete(&self, system: &str, key: &str) -> Value {
        write_union(&self.client, &self.schema, system, key, None, None)
            .await
            .unwrap();
        self.link(system, key).await.unwrap()
    }

    async fn link(&self, system: &str, key: &str) -> Result<Value, tokio_postgres::Error> {
        link_on(&self.client, &self.schema, system, key).await
    }

    /// (system, source_key) → (seq, cluster_id) of every linked record.
    async fn records(&self) -> BTreeMap<(String, String), (i64, i64)> {
        records_on(&self.client, &self.schema).await
    }

    /// A record's permanent number.
    async fn number(&self, system: &str, key: &str) -> i64 {
        self.client
            .query_one(
                &format!(
                    "select id from {}.ids where system = $1 and source_key = $2",
                    self.schema
                ),
                &[&system, &key],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn cluster(&self, system: &str, key: &str) -> i64 {
        self.records().await[&(system.to_string(), key.to_string())].1
    }

    async fn i64(&self, sql: &str) -> i64 {
        self.client
            .query_one(&sql.replace("{s}", &self.schema), &[])
            .await
            .expect(sql)
            .get(0)
    }
}

/// Writes the union row of (system, key), as l1_cleanse would, or deletes
/// it (`r` None); `ts` is its source change time.
async fn write_union(
    client: &Client,
    schema: &str,
    system: &str,
    key: &str,
    r: Option<&Rec>,
    ts: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    match r {
        Some(r) => client
            .execute(
                &format!("insert into {schema}.u as u (system, source_key, name, phone, email, birth_date, source_ts_ms, created_ts_ms) values ($1, $2, $3, $4, $5, $6, $7, $7)
                  on conflict (system, source_key) do update set name = $3, phone = $4, email = $5, birth_date = $6, source_ts_ms = $7,
                    created_ts_ms = least(u.created_ts_ms, excluded.created_ts_ms)"),
                &[&system, &key, &r.name, &r.phone, &r.email, &r.birth, &ts],
            )
            .await?,
        None => client
            .execute(&format!("delete from {schema}.u where system = $1 and source_key = $2"), &[&system, &key])
            .await?,
    };
    Ok(())
}

async fn link_on(
    client: &Client,
    schema: &str,
    system: &str,
    key: &str,
) -> Result<Value, tokio_postgres::Error> {
    let ev = json!({"op": "u", "record": {"system": system, "source_key": key}});
    let row = client
        .query_one(&format!("call {schema}.link($1)"), &[&Json(ev)])
        .await?;
    let Json(out): Json<Value> = row.get(0);
    Ok(out["identity"].clone())
}

async fn records_on(client: &Client, schema: &str) -> BTreeMap<(String, String), (i64, i64)> {
    client
        .query(
            &format!("select system, source_key, seq, cluster_id from {schema}.records"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect()
}

/// The partition of records into clusters, as sets of (system, key).
fn partition(
    records: &BTreeMap<(String, String), (i64, i64)>,
) -> BTreeSet<BTreeSet<(String, String)>> {
    let mut by: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
    for (k, (_, c)) in records {
        by.entry(*c).or_default().insert(k.clone());
    }
    by.into_values().collect()
}

// ---------------------------------------------------------------------------
// The from-scratch model: the clusters the records decide, written again in
// Rust from the rule the template documents, never from its SQL.

/// A value as the rules see it: trimmed, none when blank.
fn clean(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// The key values of a record, as the rules define them: every column of the
/// rule non-blank (trimmed), several columns joined with U+001F.
fn key_values(r: &Rec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = clean(&r.phone) {
        out.push(("phone".to_string(), p));
    }
    if let Some(e) = clean(&r.email) {
        out.push(("email".to_string(), e));
    }
    if let (Some(n), Some(b)) = (clean(&r.name), clean(&r.birth)) {
        out.push(("name_birth".to_string(), format!("{n}\u{1f}{b}")));
    }
    out
}

/// A record of the union: its values and when its source first showed it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    rec: Rec,
    created: Option<i64>,
}

/// A steward's override in force: (must_link?, a, b, its id).
type Override = (bool, Id, Id, i64);

/// What the records decide: every record's cluster as its oldest record,
/// the generic values and the held edges.
#[derive(Debug, Clone, PartialEq, Default)]
struct Decided {
    anchor: BTreeMap<Id, Id>,
    generic: BTreeSet<KeyValue>,
    held: BTreeSet<(Id, KeyValue)>,
}

impl Decided {
    fn clusters(&self) -> BTreeSet<BTreeSet<Id>> {
        let mut by: BTreeMap<&Id, BTreeSet<Id>> = BTreeMap::new();
        for (r, a) in &self.anchor {
            by.entry(a).or_default().insert(r.clone());
        }
        by.into_values().collect()
    }
}

struct Sets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl Sets {
    fn new(records: usize, nodes: usize) -> Sets {
        Sets {
            parent: (0..nodes).collect(),
            size: (0..nodes).map(|i| usize::from(i < records)).collect(),
        }
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[b] = a;
            self.size[a] += self.size[b];
        }
    }
}

/// An edge of the constrained union, in its order: (rule rank, value,
/// bearer's age, bearer, value's node, vouched for by a steward).
type Edge<'a> = (
    usize,
    &'a String,
    (bool, Option<i64>, Id),
    usize,
    usize,
    bool,
);

/// The rules' max_clusters and order, as RULES declares them.
fn max_clusters(rule: &str) -> Option<usize> {
    (rule == "phone").then_some(3)
}
fn rule_rank(rule: &str) -> usize {
    ["must_link", "phone", "email", "name_birth", "fuzzy"]
        .iter()
        .position(|r| *r == rule)
        .unwrap()
}

/// The clusters of `rows` by the documented rule: a value more than
/// max_clusters records bear is generic when they fall into more than
/// max_clusters components of the graph without such values; the
/// components through every other value are the clusters, cut by the
/// constrained union (edges by rule order, value, bearers oldest first;
/// an edge is held when it would join records into a set larger than
/// max_size, unless it is a must_link, or join a cannot-link pair) where one is too large or holds
/// a cannot-link pair. A cluster's anchor is its oldest record.
fn decide(rows: &BTreeMap<Id, Row>, overrides: &[Override], max_size: Option<usize>) -> Decided {
    decide_with(rows, overrides, max_size, false)
}

/// The scored rule of the property test (SCORED), from its documentation:
/// candidates share the birth date; name equal 2, one edit 1, else -1;
/// phone equal 1, else -1; e-mail 0; a blank side 0; linked from 2. Two
/// records with different e-mails conflict: never one cluster.
fn fuzzy_score(a: &Rec, b: &Rec) -> Option<i64> {
    let (Some(x), Some(y)) = (&a.birth, &b.birth) else {
        return None;
    };
    if x != y {
        return None;
    }
    let name = match (clean(&a.name), clean(&b.name)) {
        (Some(x), Some(y)) if x == y => 2,
        (Some(x), Some(y)) if edits(&x, &y) <= 1 => 1,
        (Some(_), Some(_)) => -1,
        _ => 0,
    };
    let phone = match (clean(&a.phone), clean(&b.phone)) {
        (Some(x), Some(y)) if x == y => 1,
        (Some(_), Some(_)) => -1,
        _ => 0,
    };
    Some(name + phone)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn decide_with(
    rows: &BTreeMap<Id, Row>,
    overrides: &[Override],
    max_size: Option<usize>,
    scored: bool,
) -> Decided {
    let ids: Vec<&Id> = rows.keys().collect();
    let index: HashMap<&Id, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let age = |i: usize| {
        let r = &rows[ids[i]];
        (r.created.is_none(), r.created, ids[i].clone())
    };
    let mut bearers: BTreeMap<KeyValue, Vec<usize>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        for kv in key_values(&rows[*id].rec) {
            bearers.entry(kv).or_default().push(i);
        }
    }
    if scored {
        for (i, a) in ids.iter().enumerate() {
            for b in ids.iter().skip(i + 1) {
                if fuzzy_score(&rows[*a].rec, &rows[*b].rec).is_some_and(|s| s >= 2) {
                    let kv = (
                        "fuzzy".to_string(),
                        format!("{}\u{1f}{}\u{1f}{}\u{1f}{}", a.0, a.1, b.0, b.1),
                    );
                    bearers.entry(kv).or_default().extend([index[a], index[b]]);
                }
            }
        }
    }
    let mut cannot = Vec::new();
    if scored {
        // conflicts: [email]: two e-mails, different, keep records apart.
        for (i, a) in ids.iter().enumerate() {
            for (j, b) in ids.iter().enumerate().skip(i + 1) {
                if let (Some(x), Some(y)) = (clean(&rows[*a].rec.email), clean(&rows[*b].rec.email))
                    && x != y
                {
                    cannot.push((i, j));
                }
            }
        }
    }
    for (must, a, b, oid) in overrides {
        if let (Some(&x), Some(&y)) = (index.get(a), index.get(b)) {
            if *must {
                let kv = ("must_link".to_string(), oid.to_string());
                bearers.entry(kv).or_default().extend([x, y]);
            } else {
                cannot.push((x, y));
            }
        }
    }
    let candidate =
        |kv: &KeyValue, b: &Vec<usize>| max_clusters(&kv.0).is_some_and(|n| b.len() > n);
    let mut base = Sets::new(ids.len(), ids.len());
    for (kv, b) in &bearers {
        if !candidate(kv, b) {
            b.windows(2).for_each(|w| base.union(w[0], w[1]));
        }
    }
    let mut out = Decided::default();
    for (kv, b) in &bearers {
        if candidate(kv, b) {
            let comps: BTreeSet<usize> = b.iter().map(|&i| base.find(i)).collect();
            if comps.len() > max_clusters(&kv.0).unwrap() {
                out.generic.insert(kv.clone());
            }
        }
    }
    let linking: Vec<(&KeyValue, &Vec<usize>)> = bearers
        .iter()
        .filter(|(kv, _)| !out.generic.contains(*kv))
        .collect();
    let mut whole = Sets::new(ids.len(), ids.len());
    for (_, b) in &linking {
        b.windows(2).for_each(|w| whole.union(w[0], w[1]));
    }
    let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..ids.len() {
        comps.entry(whole.find(i)).or_default().push(i);
    }
    // Records are nodes 0..n, the values n.. (size 0).
    let n = ids.len();
    let mut parts = Sets::new(n, n + linking.len());
    for members in comps.values() {
        let inside = |i: &usize| members.contains(i);
        let constrained = max_size.is_some_and(|m| members.len() > m)
            || cannot.iter().any(|(a, b)| inside(a) && inside(b));
        let mut edges: Vec<Edge> = Vec::new();
        for (v, (kv, b)) in linking.iter().enumerate() {
            for &i in b.iter().filter(|i| inside(i)) {
                edges.push((
                    rule_rank(&kv.0),
                    &kv.1,
                    age(i),
                    i,
                    n + v,
                    kv.0 == "must_link",
                ));
            }
        }
        if !constrained {
            for (.., i, node, _) in &edges {
                parts.union(*i, *node);
            }
            continue;
        }
        edges.sort();
        for (.., i, node, vouched) in &edges {
            let (a, b) = (parts.find(*i), parts.find(*node));
            if a == b {
                continue;
            }
            let (x, y) = (parts.size[a], parts.size[b]);
            let too_big = !vouched && x > 0 && y > 0 && max_size.is_some_and(|m| x + y > m);
            let apart = cannot.iter().any(|&(x, y)| {
                let (x, y) = (parts.find(x), parts.find(y));
                (x == a && y == b) || (x == b && y == a)
            });
            if !too_big && !apart {
                parts.union(a, b);
            }
        }
        for (v, (kv, b)) in linking.iter().enumerate() {
            for &i in b.iter().filter(|i| inside(i)) {
                if parts.find(i) != parts.find(n + v) {
                    out.held.insert((ids[i].clone(), (*kv).clone()));
                }
            }
        }
    }
    let mut oldest: BTreeMap<usize, usize> = BTreeMap::new();
    for i in 0..n {
        let root = parts.find(i);
        let e = oldest.entry(root).or_insert(i);
        if age(i) < age(*e) {
            *e = i;
        }
    }
    for i in 0..n {
        let a = oldest[&parts.find(i)];
        out.anchor.insert(ids[i].clone(), ids[a].clone());
    }
    out
}

/// What the graph in `schema` holds, as `Decided`; every cluster's id must
/// be its anchor's number.
async fn decided_on(client: &Client, schema: &str) -> Result<Decided, String> {
    let records = records_on(client, schema).await;
    let by_seq: HashMap<i64, &Id> = records.iter().map(|(k, (seq, _))| (*seq, k)).collect();
    let mut out = Decided::default();
    for (k, (_, c)) in &records {
        let Some(a) = by_seq.get(c) else {
            return Err(format!(
                "{k:?} is in cluster {c}, which is no record's number"
            ));
        };
        out.anchor.insert(k.clone(), (*a).clone());
    }
    for r in client
        .query(&format!("select rule, value from {schema}.generic"), &[])
        .await
        .unwrap()
    {
        out.generic.insert((r.get(0), r.get(1)));
    }
    for r in client
        .query(
            &format!(
                "select r.system, r.source_key, k.rule, k.value from {schema}.keys k join {schema}.records r using (seq)
                  where not k.links and not exists (select 1 from {schema}.generic x where x.rule = k.rule and x.value = k.value)"
            ),
            &[],
        )
        .await
        .unwrap()
    {
        out.held.insert(((r.get(0), r.get(1)), (r.get(2), r.get(3))));
    }
    Ok(out)
}

/// The graph's state against the model's, said plainly when they differ.
fn same(got: &Decided, want: &Decided) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    Err(format!(
        "clusters {:?} (generic {:?}, held {:?}) != the records' own {:?} (generic {:?}, held {:?}); anchors {:?} != {:?}",
        got.clusters(),
        got.generic,
        got.held,
        want.clusters(),
        want.generic,
        want.held,
        got.anchor,
        want.anchor
    ))
}

// ---------------------------------------------------------------------------
// Property test.

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Rec, i64),
    Delete(usize),
}

impl Op {
    fn record(&self) -> usize {
        match self {
            Op::Put(i, ..) | Op::Delete(i) => *i,
        }
    }
}

const SYSTEMS: [&str; 3] = ["crm", "sales", "options"];

fn record_id(i: usize) -> (String, String) {
    (SYSTEMS[i % 3].to_string(), (i / 3).to_string())
}

fn value(choices: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        6 => proptest::sample::select(choices).prop_map(|v| Some(v.to_string())),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let rec = (
        value(&["n1", "n2", " "]),
        value(&["p1", "p2", "p3", "", " p1 "]),
        value(&["e1", "e2", "e3"]),
        value(&["d1", "d2"]),
    )
        .prop_map(|(name, phone, email, birth)| Rec {
            name,
            phone,
            email,
            birth,
        });
    // Source times from a small range: ties happen, and system and key decide.
    prop_oneof![
        4 => (0..10usize, rec, 0..4i64).prop_map(|(i, r, ts)| Op::Put(i, r, ts)),
        1 => (0..10usize).prop_map(Op::Delete),
    ]
}

/// Overrides of a case: (must_link?, record, record), both of 0..10.
fn overrides() -> impl Strategy<Value = Vec<(bool, usize, usize)>> {
    proptest::collection::vec(
        (any::<bool>(), 0..10usize, 0..10usize).prop_filter("two records", |(_, a, b)| a != b),
        0..3,
    )
}

fn cases() -> u32 {
    std::env::var("PGCHAIN_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// The union as the model keeps it after `op`: l1_cleanse's created (an
/// insert sets it, an update keeps the least).
fn apply(rows: &mut BTreeMap<Id, Row>, op: &Op) {
    match op {
        Op::Put(i, r, ts) => {
            let created = rows
                .get(&record_id(*i))
                .and_then(|o| o.created)
                .map_or(*ts, |c| c.min(*ts));
            rows.insert(
                record_id(*i),
                Row {
                    rec: r.clone(),
                    created: Some(created),
                },
            );
        }
        Op::Delete(i) => {
            rows.remove(&record_id(*i));
        }
    }
}

/// One chain's transaction for `op`: the union row, then the link step,
/// retried as pgchain retries a serialization failure or deadlock.
async fn deliver(c: &Client, schema: &str, op: &Op) {
    let (sys, key) = record_id(op.record());
    loop {
        c.batch_execute("begin").await.unwrap();
        let (r, ts) = match op {
            Op::Put(_, r, ts) => (Some(r), Some(*ts)),
            Op::Delete(_) => (None, None),
        };
        let done = match write_union(c, schema, &sys, &key, r, ts).await {
            Ok(()) => link_on(c, schema, &sys, &key).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                c.batch_execute("commit").await.unwrap();
                return;
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string());
                assert!(matches!(code.as_deref(), Some("40001" | "40P01")), "{e:?}");
                c.batch_execute("rollback").await.unwrap();
            }
        }
    }
}

/// Empties the graph in `schema` and writes the case's overrides.
async fn reset(c: &Client, schema: &str, ovr: &[(bool, usize, usize)]) -> Vec<Override> {
    c.batch_execute(&format!(
        "delete from {s}.u; delete from {s}.records; delete from {s}.keys; delete from {s}.generic;
         delete from {s}.history; delete from {s}.review; delete from {s}.overrides; delete from {s}.ids;",
        s = schema
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    for (must, a, b) in ovr {
        let (a, b) = (record_id(*a), record_id(*b));
        let kind = if *must { "must_link" } else { "cannot_link" };
        let id: i64 = c
            .query_one(
                &format!("insert into {schema}.overrides (kind, a_system, a_key, b_system, b_key, made_by, why)
                          values ($1, $2, $3, $4, $5, 'test', 'test') returning id"),
                &[&kind, &a.0, &a.1, &b.0, &b.1],
            )
            .await
            .unwrap()
            .get(0);
        out.push((*must, a, b, id));
    }
    out
}

/// Runs `ops` three ways: in order on graph `a`, checked against the model
/// after every event; on graph `b`, the events of records 0, 2, 4, … on one
/// connection and the others on another at once (each record's events in
/// order, as a partition keeps them); then rebuild of `a`. The clusters,
/// ids, generic values and held links equal the model's every time.
async fn run_ops(
    a: &Graph,
    b: (&Client, &Client),
    ops: &[Op],
    ovr: &[(bool, usize, usize)],
    max_size: Option<usize>,
    scored: bool,
) -> Result<(), String> {
    let overrides = reset(&a.client, &a.schema, ovr).await;
    let overrides_b = reset(b.0, "h", ovr).await;
    let mut rows: BTreeMap<Id, Row> = BTreeMap::new();
    for (n, op) in ops.iter().enumerate() {
        deliver(&a.client, &a.schema, op).await;
        apply(&mut rows, op);
        let got = decided_on(&a.client, &a.schema).await?;
        same(&got, &decide_with(&rows, &overrides, max_size, scored))
            .map_err(|e| format!("after op {n} ({op:?}) in order: {e}"))?;
    }
    let want = decide_with(&rows, &overrides, max_size, scored);

    let half = |even: bool| -> Vec<Op> {
        ops.iter()
            .filter(|o| (o.record() % 2 == 0) == even)
            .cloned()
            .collect()
    };
    let (evens, odds) = (half(true), half(false));
    let one = async {
        for op in &evens {
            deliver(b.0, "h", op).await;
        }
    };
    let other = async {
        for op in &odds {
            deliver(b.1, "h", op).await;
        }
    };
    futures::future::join(one, other).await;
    let got_b = decided_on(b.0, "h").await?;
    let want_b = decide_with(&rows, &overrides_b, max_size, scored);
    same(&got_b, &want_b).map_err(|e| format!("two connections at once: {e}"))?;

    let before: BTreeMap<Id, (i64, i64)> = a.records().await;
    a.client
        .batch_execute(&format!("call {}.rebuild()", a.schema))
        .await
        .unwrap();
    let after = a.records().await;
    if before != after {
        return Err(format!(
            "rebuild changed clusters or ids: {before:?} -> {after:?}"
        ));
    }
    same(&decided_on(&a.client, &a.schema).await?, &want).map_err(|e| format!("after rebuild: {e}"))
}

fn property(label: &str, extra: &'static str, max_size: Option<usize>, scored: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, g, b1, b2) = rt.block_on(async {
        let db = TestDb::new(label).await;
        let g = Graph::new(&db, "g", extra).await;
        let h = Graph::new(&db, "h", extra).await;
        let b2 = db.client().await;
        (db, g, h, b2)
    });
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..24), ovr in overrides())| {
        let result = rt.block_on(run_ops(&g, (&b1.client, &b2), &ops, &ovr, max_size, scored));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
    drop((g, b1, b2));
    drop(db);
}

/// The scored rule the property test runs live (see fuzzy_score).
macro_rules! scored {
    () => {
        "scored:\n  fuzzy:\n    blocks: [[birth_date]]\n    threshold: 2\n    compare:\n      name: [{exact: true, weight: 2}, {levenshtein: 1, weight: 1}, {else: -1}]\n      phone: [{exact: true, weight: 1}, {else: -1}]\n      email: [{exact: true, weight: 0}]\n    conflicts: [email]\n"
    };
}

#[test]
fn incremental_clusters_equal_the_records_own_in_any_order_and_after_rebuild() {
    // max_clusters 3 on phone: the generic guard is live, overrides, and a
    // scored rule.
    property("prop_free", scored!(), None, true);
}

#[test]
fn incremental_clusters_equal_the_records_own_without_a_scored_rule() {
    // Exact rules alone, as the customer example's graph without its scored
    // rule: a record whose changed values no other record bears takes the
    // short way (its cluster stays), checked here with the size guard live.
    property("prop_exact", "max_cluster_size: 3\n", Some(3), false);
}

#[test]
fn incremental_clusters_equal_the_records_own_with_a_maximum_cluster_size() {
    property(
        "prop_max",
        concat!(scored!(), "max_cluster_size: 3\n"),
        Some(3),
        true,
    );
}

// ---------------------------------------------------------------------------
// Named scenarios.

fn rec(phone: Option<&str>, email: Option<&str>, name: Option<&str>, birth: Option<&str>) -> Rec {
    Rec {
        phone: phone.map(String::from),
        email: email.map(String::from),
        name: name.map(String::from),
        birth: birth.map(String::from),
    }
}

/// explain's hops: (from, rule, matched values, to, every rule the two match on).
async fn explain(
    g: &Graph,
    a: (&str, &str),
    b: (&str, &str),
) -> Vec<(String, String, Value, String, Vec<String>)> {
    g.client
        .query(
            &format!("select from_system || '/' || from_key, rule, matched, to_system || '/' || to_key, rules, linked_at is not null
                        from {}.explain($1, $2, $3, $4) order by hop", g.schema),
            &[&a.0, &a.1, &b.0, &b.1],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r.get::<_, bool>(5), "every link says when it was made");
            (r.get(0), r.get(1), r.get::<_, Json<Value>>(2).0, r.get(3), r.get(4))
        })
        .collect()
}

async fn history(g: &Graph) -> Vec<(String, i64, Vec<i64>)> {
    g.client
        .query(
            &format!(
                "select kind, cluster_id, clusters from {}.history order by id",
                g.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_record_chains_three_clusters_and_deleting_it_splits_them() {
    let db = TestDb::new("id_chain").await;
    let g = Graph::new(&db, "g", "").await;
    g.put("crm", "a", &rec(Some("010-1111-2222"), None, None, None))
        .await;
    g.put(
        "sales",
        "b",
        &rec(None, Some("kim@example.com"), None, None),
    )
    .await;
    g.put(
        "options",
        "c",
        &rec(None, None, Some("kim minsu"), Some("1990-01-02")),
    )
    .await;
    let (a, b, c) = (
        g.cluster("crm", "a").await,
        g.cluster("sales", "b").await,
        g.cluster("options", "c").await,
    );
    assert!(
        a < b && b < c,
        "three clusters, in order of age: {a} {b} {c}"
    );

    // One record carries all three keys: the three clusters chain into the oldest.
    let out = g
        .put(
            "crm",
            "d",
            &rec(
                Some("010-1111-2222"),
                Some("kim@example.com"),
                Some("kim minsu"),
                Some("1990-01-02"),
            ),
        )
        .await;
    for (sys, key) in [("crm", "a"), ("sales", "b"), ("options", "c"), ("crm", "d")] {
        assert_eq!(g.cluster(sys, key).await, a, "{sys}/{key}");
    }
    assert_eq!(out["merged"], json!({b.to_string(): a, c.to_string(): a}));
    assert_eq!(out["clusters"], json!([a, b, c]));
    assert_eq!(
        history(&g).await,
        vec![("merge".to_string(), a, vec![b, c])]
    );
    // Why are a and c one customer: a's phone is d's, and d's name and birth date are c's.
    assert_eq!(
        explain(&g, ("crm", "a"), ("options", "c")).await,
        vec![
            (
                "crm/a".into(),
                "phone".into(),
                json!({"phone": "010-1111-2222"}),
                "crm/d".into(),
                vec!["phone".to_string()],
            ),
            (
                "crm/d".into(),
                "name_birth".into(),
                json!({"name": "kim minsu", "birth_date": "1990-01-02"}),
                "options/c".into(),
                vec!["name_birth".to_string()],
            ),
        ]
    );
    // The whole cluster, as a steward sees it: each shared value once,
    // with its bearers, clean values, and when it linked.
    let links = g
        .client
        .query(
            "select rule, matched, state, records, elsewhere from g.explain_cluster('options', 'c') order by rule",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Json<Value>>(1).0,
                r.get::<_, String>(2),
                r.get::<_, Json<Value>>(3).0,
                r.get::<_, i64>(4),
            )
        })
        .collect::<Vec<_>>();
    let bearers = |x: &str, y: &str| json!([{"system": "crm", "source_key": x}, {"system": y.split('/').next().unwrap(), "source_key": y.split('/').nth(1).unwrap()}]);
    assert_eq!(
        links,
        vec![
            (
                "email".to_string(),
                json!({"email": "kim@example.com"}),
                "links".to_string(),
                bearers("d", "sales/b"),
                0
            ),
            (
                "name_birth".to_string(),
                json!({"name": "kim minsu", "birth_date": "1990-01-02"}),
                "links".to_string(),
                bearers("d", "options/c"),
                0
            ),
            (
                "phone".to_string(),
                json!({"phone": "010-1111-2222"}),
                "links".to_string(),
                json!([{"system": "crm", "source_key": "a"}, {"system": "crm", "source_key": "d"}]),
                0
            ),
        ]
    );

    // The bridge goes: the part with the oldest record (a) keeps the id, the
    // others get new ones; the split is recorded.
    let out = g.delete("crm", "d").await;
    assert_eq!(g.cluster("crm", "a").await, a);
    let (b2, c2) = (
        g.cluster("sales", "b").await,
        g.cluster("options", "c").await,
    );
    assert_eq!(
        (b2, c2),
        (b, c),
        "each part has its oldest record's number as id again"
    );
    assert_eq!(out["split"], json!({b2.to_string(): a, c2.to_string(): a}));
    let mut new_ids = vec![b2, c2];
    new_ids.sort();
    assert_eq!(
        history(&g).await.last().unwrap(),
        &("split".to_string(), a, new_ids)
    );
    assert!(explain(&g, ("crm", "a"), ("options", "c")).await.is_empty());
    assert_eq!(g.records().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_and_generic_values_never_link() {
    let db = TestDb::new("id_generic").await;
    let g = Graph::new(&db, "g", "").await;
    // Blank values and a rule whose `when` column is false never link.
    g.put("crm", "1", &rec(Some("  "), Some(""), Some("lee"), None))
        .await;
    g.put("crm", "2", &rec(Some("  "), Some(""), Some("lee"), None))
        .await;
    assert_ne!(g.cluster("crm", "1").await, g.cluster("crm", "2").await);
    g.client
        .batch_execute(
            "update g.u set phone = '010-5', phone_ok = false where source_key in ('1', '2')",
        )
        .await
        .unwrap();
    g.link("crm", "1").await.unwrap();
    g.link("crm", "2").await.unwrap();
    assert_ne!(g.cluster("crm", "1").await, g.cluster("crm", "2").await);

    // A shop's switchboard: four different people (distinct e-mails) give it.
    // Up to max_clusters (3) it links; the fourth makes it generic, and the
    // people come apart again.
    for i in 1..=3 {
        g.put(
            "sales",
            &i.to_string(),
            &rec(Some("1588-0000"), Some(&format!("p{i}@x.com")), None, None),
        )
        .await;
    }
    let first = g.cluster("sales", "1").await;
    assert_eq!(
        g.cluster("sales", "3").await,
        first,
        "linked while below the limit"
    );
    g.put(
        "sales",
        "4",
        &rec(Some("1588-0000"), Some("p4@x.com"), None, None),
    )
    .await;
    let ids: BTreeSet<i64> = futures::future::join_all((1..=4).map(|i| {
        let g = &g;
        async move { g.cluster("sales", &i.to_string()).await }
    }))
    .await
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 4, "four people, four clusters: {ids:?}");
    assert_eq!(
        g.cluster("sales", "1").await,
        first,
        "the oldest keeps the id"
    );
    assert_eq!(
        g.i64(
            "select clusters::bigint from {s}.generic where rule = 'phone' and value = '1588-0000'"
        )
        .await,
        4
    );
    // From now on the switchboard links no one; the e-mail still does.
    g.put(
        "options",
        "9",
        &rec(Some("1588-0000"), Some("p2@x.com"), None, None),
    )
    .await;
    assert_eq!(
        g.cluster("options", "9").await,
        g.cluster("sales", "2").await
    );
    assert_ne!(
        g.cluster("options", "9").await,
        g.cluster("sales", "3").await
    );
    assert_eq!(
        g.i64("select count(*) from {s}.keys where value = '1588-0000' and links")
            .await,
        0
    );

    // A steward reviews it: these people are one household after all. The
    // released value links again, is not made generic by a new bearer, and
    // rebuild keeps it linking.
    let refused = g
        .client
        .query_one(
            "select g.release_value('phone', '010-5', 'ana', 'one home')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .as_db_error()
            .unwrap()
            .message()
            .contains("phone value 010-5 is not generic"),
        "{refused:?}"
    );
    g.client
        .query_one(
            "select g.release_value('phone', '1588-0000', 'ana', 'one household')",
            &[],
        )
        .await
        .unwrap();
    let together = || async {
        let ids: BTreeSet<i64> = futures::future::join_all(
            [
                ("sales", "1"),
                ("sales", "2"),
                ("sales", "3"),
                ("sales", "4"),
                ("options", "9"),
            ]
            .map(|(s, k)| {
                let g = &g;
                async move { g.cluster(s, k).await }
            }),
        )
        .await
        .into_iter()
        .collect();
        ids
    };
    assert_eq!(together().await.len(), 1);
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 0);
    g.put(
        "sales",
        "5",
        &rec(Some("1588-0000"), Some("p5@x.com"), None, None),
    )
    .await;
    assert_eq!(g.cluster("sales", "5").await, g.cluster("sales", "1").await);
    g.client.batch_execute("call g.rebuild()").await.unwrap();
    assert_eq!(together().await.len(), 1);
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_beyond_the_maximum_cluster_size_is_refused_for_review() {
    let db = TestDb::new("id_maxsize").await;
    let g = Graph::new(&db, "g", "max_cluster_size: 4").await;
    for (k, p, e) in [
        ("1", None, "x@a.com"),
        ("2", None, "x@a.com"),
        ("3", None, "x@a.com"),
        ("4", Some("010-7"), "y@b.com"),
        ("5", Some("010-7"), "y@b.com"),
    ] {
        g.put("crm", k, &rec(p, Some(e), None, None)).await;
    }
    let (x, y) = (g.cluster("crm", "1").await, g.cluster("crm", "4").await);
    // z joins x (four records), then brings y's phone: one cluster of six
    // would be too large. The constrained union takes the rules in their
    // order: phone (the first rule) joins z to y; x's e-mail would then make
    // six, and is held.
    g.put("sales", "z", &rec(None, Some("x@a.com"), None, None))
        .await;
    assert_eq!(g.cluster("sales", "z").await, x);
    let out = g
        .put(
            "sales",
            "z",
            &rec(Some("010-7"), Some("x@a.com"), None, None),
        )
        .await;
    assert_eq!(out["clusters"], json!([x, y]), "{out}");
    assert_eq!(g.cluster("crm", "1").await, x);
    assert_eq!(g.cluster("crm", "4").await, y);
    assert_eq!(g.cluster("sales", "z").await, y);
    // The refused link is held and recorded for review.
    let review = g
        .client
        .query(
            "select reason, rule, value, size, clusters from g.review",
            &[],
        )
        .await
        .unwrap();
    let review: Vec<(String, String, String, i32, Vec<i64>)> = review
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        review,
        vec![(
            "max_cluster_size".into(),
            "email".into(),
            "x@a.com".into(),
            6,
            vec![x]
        )]
    );
    assert_eq!(
        g.i64("select count(*) from {s}.keys where value = 'x@a.com' and not links")
            .await,
        1
    );
    assert_eq!(g.i64("select count(*) from {s}.records where cluster_id = (select cluster_id from {s}.records where source_key = '4')").await, 3);
    // The same after rebuild, and when the events come in another order.
    g.client.batch_execute("call g.rebuild()").await.unwrap();
    assert_eq!(g.cluster("sales", "z").await, y);
    assert_eq!(g.cluster("crm", "1").await, x);

    // A member of x goes: x has room again, and the held link is checked
    // again: z's e-mail would still make five with y's records.
    g.delete("crm", "3").await;
    assert_eq!(g.cluster("sales", "z").await, y);
    // y loses one too: z's e-mail now joins all four.
    let out = g.delete("crm", "5").await;
    assert_eq!(g.cluster("sales", "z").await, x);
    assert_eq!(g.cluster("crm", "4").await, x);
    assert_eq!(out["merged"], json!({y.to_string(): x}), "{out}");
    assert_eq!(
        g.i64("select count(*) from {s}.keys where not links").await,
        0
    );

    // Back to six: held again; reviewed and released, the held link links
    // beyond the maximum.
    g.put("crm", "3", &rec(None, Some("x@a.com"), None, None))
        .await;
    g.put("crm", "5", &rec(Some("010-7"), Some("y@b.com"), None, None))
        .await;
    assert_eq!(g.cluster("sales", "z").await, y);
    // Reviewed and released: the held link links, and the two clusters merge.
    let out: Json<Value> = g
        .client
        .query_one(
            "select g.release_held('sales', 'z', 'email', 'x@a.com', 'ana')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(out.0["merged"], json!({y.to_string(): x}), "{out:?}");
    assert_eq!(g.cluster("crm", "4").await, x);
    assert_eq!(g.cluster("crm", "3").await, x);
    assert_eq!(
        g.i64("select count(*) from {s}.keys where not links").await,
        0
    );
    g.client.batch_execute("call g.rebuild()").await.unwrap();
    assert_eq!(g.cluster("crm", "4").await, x, "rebuild keeps the release");
    let again = g
        .client
        .query_one(
            "select g.release_held('sales', 'z', 'email', 'x@a.com', 'ana')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(again.code().unwrap().code(), "22023");
}

/// The union rows as they are now, for a from-scratch check.
async fn union_rows(client: &Client, schema: &str) -> BTreeMap<Id, Row> {
    client
        .query(
            &format!("select system, source_key, name, phone, email, birth_date, created_ts_ms from {schema}.u"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                Row {
                    rec: Rec {
                        name: r.get(2),
                        phone: r.get(3),
                        email: r.get(4),
                        birth: r.get(5),
                    },
                    created: r.get(6),
                },
            )
        })
        .collect()
}

/// One chain's transaction: write the union row (or delete it), link it.
async fn change(
    client: &Client,
    schema: &str,
    id: &Id,
    r: Option<&Rec>,
) -> Result<(), tokio_postgres::Error> {
    write_union(client, schema, &id.0, &id.1, r, None).await?;
    link_on(client, schema, &id.0, &id.1).await.map(|_| ())
}

/// Changes in one transaction; a serialization failure or deadlock rolls it back.
async fn run(c: &Client, ops: &[(Id, Option<Rec>)]) -> Result<(), ()> {
    c.batch_execute("begin").await.unwrap();
    for (who, r) in ops {
        if let Err(e) = change(c, "g", who, r.as_ref()).await {
            let code = e.code().map(|c| c.code().to_string());
            assert!(matches!(code.as_deref(), Some("40001" | "40P01")), "{e:?}");
            c.batch_execute("rollback").await.unwrap();
            return Err(());
        }
    }
    c.batch_execute("commit").await.unwrap();
    Ok(())
}

fn id(system: &str, key: &str) -> Id {
    (system.to_string(), key.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_and_a_split_of_one_cluster_from_two_transactions_at_once() {
    let db = TestDb::new("id_concurrent").await;
    let g = Graph::new(&db, "g", "").await;
    for merge_first in [true, false] {
        g.client
            .batch_execute("delete from g.u; delete from g.records; delete from g.keys; delete from g.history;")
            .await
            .unwrap();
        // x = a -phone- b -email- c; y alone. d joins a (name and birth
        // date) with y (e-mail); deleting b splits c off x. The two share
        // no key value, only the cluster x.
        g.put("crm", "a", &rec(Some("p1"), None, Some("ann"), Some("d1")))
            .await;
        g.put("crm", "b", &rec(Some("p1"), Some("e1"), None, None))
            .await;
        g.put("crm", "c", &rec(None, Some("e1"), None, None)).await;
        g.put("crm", "y", &rec(None, Some("e9"), None, None)).await;
        let x = g.cluster("crm", "a").await;
        let merge = |c: Client| async move {
            c.batch_execute("begin").await.unwrap();
            change(
                &c,
                "g",
                &id("crm", "d"),
                Some(&rec(None, Some("e9"), Some("ann"), Some("d1"))),
            )
            .await
            .unwrap();
            c
        };
        let split = |c: Client| async move {
            c.batch_execute("begin").await.unwrap();
            change(&c, "g", &id("crm", "b"), None).await.unwrap();
            c
        };
        let (c1, c2) = (db.client().await, db.client().await);
        let (first, second) = if merge_first {
            (merge(c1).await, tokio::spawn(split(c2)))
        } else {
            (split(c2).await, tokio::spawn(merge(c1)))
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second transaction waits for the cluster"
        );
        first.batch_execute("commit").await.unwrap();
        let second = second.await.unwrap();
        second.batch_execute("commit").await.unwrap();

        let model = union_rows(&g.client, "g").await;
        let got = partition(&g.records().await);
        assert_eq!(
            got,
            decide(&model, &[], None).clusters(),
            "merge first: {merge_first}"
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(g.cluster("crm", "d").await, x, "merge first: {merge_first}");
        assert!(g.cluster("crm", "c").await > x);
    }

    // Many chains at once on a few records, some two events to a
    // transaction as a batch runs them: a transaction that would take a
    // lock out of order is retried (40001), as pgchain retries it.
    g.client
        .batch_execute(
            "delete from g.u; delete from g.records; delete from g.keys; delete from g.history;",
        )
        .await
        .unwrap();
    let tasks = (0..4u64).map(|w| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let c = pgchain::db::connect(&url).await.unwrap();
            let mut state = 0x9e3779b97f4a7c15u64 ^ (w + 1);
            let mut next = |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            let mut retried = 0;
            for _ in 0..60 {
                let ops: Vec<(Id, Option<Rec>)> = (0..1 + next(2))
                    .map(|_| {
                        // Each worker its own records, as each partition has its
                        // own keys; their values overlap.
                        let who = id(SYSTEMS[next(3) as usize], &format!("{w}-{}", next(2)));
                        let (a, b, c, d, keep) = (next(4), next(3), next(4), next(3), next(5));
                        let r = (keep > 0).then(|| Rec {
                            phone: (a > 0).then(|| format!("p{b}")),
                            email: (c > 0).then(|| format!("e{d}")),
                            name: None,
                            birth: None,
                        });
                        (who, r)
                    })
                    .collect();
                // As pgchain runs a batch: in one transaction; on a conflict,
                // each event in a transaction of its own, retried with backoff.
                if run(&c, &ops).await.is_err() {
                    retried += 1;
                    for op in &ops {
                        let mut wait = 5;
                        while run(&c, std::slice::from_ref(op)).await.is_err() {
                            retried += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(wait + next(wait)))
                                .await;
                            wait = (wait * 2).min(200);
                        }
                    }
                }
            }
            retried
        })
    });
    let retried: u32 = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    let model = union_rows(&g.client, "g").await;
    let got = decided_on(&g.client, "g").await.unwrap();
    assert_eq!(
        same(&got, &decide(&model, &[], None)),
        Ok(()),
        "after {retried} retries"
    );
    eprintln!("{retried} transactions retried");
}

// ---------------------------------------------------------------------------
// Unify and publish.

const UNIFY: &str = "columns:\n  name: {rule: source_priority, priority: [crm, sales, options]}\n  phone: {rule: most_frequent}\n  email: {rule: most_recent}\n  birth_date: {rule: first_non_null}\nlists: {phones: phone, emails: email}";

/// The chain link → unify → publish for one union record at source time `ts`.
async fn chain(g: &Graph, system: &str, key: &str, r: Option<&Rec>, ts: i64) -> Value {
    let s = &g.schema;
    write_union(&g.client, s, system, key, r, Some(ts))
        .await
        .unwrap();
    let mut ev = json!({"op": "u", "record": {"system": system, "source_key": key},
                        "kafka": {"topic": "t", "partition": 0, "offset": ts}});
    for step in ["link", "unify", "publish"] {
        let row = g
            .client
            .query_one(&format!("call {s}.{step}($1)"), &[&Json(&ev)])
            .await
            .unwrap();
        ev = row.get::<_, Json<Value>>(0).0;
    }
    ev
}

/// Outbox rows after `after`: (customer, change, related).
async fn outbox(g: &Graph, after: i64) -> Vec<(i64, String, Option<i64>)> {
    g.client
        .query(
            &format!(
                "select customer_id, change, related from {}.outbox where id > $1 order by id",
                g.schema
            ),
            &[&after],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn golden(g: &Graph, customer: i64) -> Value {
    let row = g
        .client
        .query_one(&format!("select to_jsonb(x) - 'created_at' - 'updated_at' from {}.golden x where customer_id = $1", g.schema), &[&customer])
        .await
        .unwrap();
    row.get::<_, Json<Value>>(0).0
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_records_follow_their_rules_and_the_outbox_gets_only_changes() {
    let db = TestDb::new("id_golden").await;
    let g = Graph::new(&db, "g", "").await;
    install(
        &db,
        "g.unify",
        "identity_unify",
        &format!("schema: g\nsource: g.u\n{UNIFY}"),
    )
    .await;
    install(&db, "g.publish", "identity_publish", "schema: g").await;
    let person =
        |name: &str, phone: &str, email: &str| rec(Some(phone), Some(email), Some(name), None);

    chain(
        &g,
        "sales",
        "1",
        Some(&person("Kim M", "010-1", "b@x.com")),
        200,
    )
    .await;
    let first = g.cluster("sales", "1").await;
    // The CRM's record is older at its source (100 < 200): the customer is
    // the CRM record's, whatever came first.
    chain(
        &g,
        "crm",
        "1",
        Some(&person("Kim Minsu", "010-1", "a@x.com")),
        100,
    )
    .await;
    let a = g.cluster("crm", "1").await;
    assert_ne!(a, first);
    chain(
        &g,
        "options",
        "1",
        Some(&rec(
            Some("010-2"),
            Some("b@x.com"),
            Some("KIM"),
            Some("1990-01-02"),
        )),
        150,
    )
    .await;
    assert_eq!(
        golden(&g, a).await,
        json!({"customer_id": a, "name": "Kim Minsu", "phone": "010-1", "email": "b@x.com", "birth_date": "1990-01-02",
               "phones": ["010-1", "010-2"], "emails": ["a@x.com", "b@x.com"], "records": 3,
               "systems": ["crm", "options", "sales"], "status": "active", "merged_into": null, "split_from": null}),
        "name by source priority (crm), phone most frequent, e-mail most recent (sales, 200), birth date first non-null"
    );
    assert_eq!(
        outbox(&g, 0).await,
        vec![
            (first, "created".into(), None),
            (first, "merged_into".into(), Some(a)),
            (a, "created".into(), None),
            (a, "updated".into(), None)
        ]
    );

    // The CRM takes the golden record and writes it back: its e-mail becomes
    // the golden one, which drops a@x.com from the list (one update); the
    // next write-back of the same values changes nothing and publishes nothing.
    let mark = g.i64("select max(id) from {s}.outbox").await;
    let back = rec(Some("010-1"), Some("b@x.com"), Some("Kim Minsu"), None);
    chain(&g, "crm", "1", Some(&back), 300).await;
    assert_eq!(outbox(&g, mark).await, vec![(a, "updated".into(), None)]);
    let mark = g.i64("select max(id) from {s}.outbox").await;
    chain(&g, "crm", "1", Some(&back), 400).await;
    chain(&g, "crm", "1", Some(&back), 500).await;
    assert_eq!(outbox(&g, mark).await, vec![], "the loop settles");

    // Merge: another customer, then a record that bridges the two.
    chain(
        &g,
        "sales",
        "2",
        Some(&person("Lee", "010-3", "lee@x.com")),
        600,
    )
    .await;
    let b = g.cluster("sales", "2").await;
    let mark = g.i64("select max(id) from {s}.outbox").await;
    chain(
        &g,
        "options",
        "1",
        Some(&rec(
            Some("010-3"),
            Some("b@x.com"),
            Some("KIM"),
            Some("1990-01-02"),
        )),
        700,
    )
    .await;
    assert_eq!(g.cluster("sales", "2").await, a);
    assert_eq!(
        outbox(&g, mark).await,
        vec![
            (a, "updated".into(), None),
            (b, "merged_into".into(), Some(a))
        ]
    );
    assert_eq!(golden(&g, b).await["status"], "merged");

    // Split: the bridge goes; sales/2 is a customer of its own again, with
    // its own record's number: the id it had before the merge.
    let mark = g.i64("select max(id) from {s}.outbox").await;
    chain(&g, "options", "1", None, 800).await;
    let c = g.cluster("sales", "2").await;
    assert_eq!(c, b);
    assert_eq!(golden(&g, c).await["status"], "active");
    assert_eq!(
        outbox(&g, mark).await,
        vec![
            (a, "updated".into(), None),
            (c, "split_from".into(), Some(a))
        ]
    );
    assert_eq!(golden(&g, c).await["name"], "Lee");

    // Every record of c deleted at its source: c is retired, not deleted.
    let mark = g.i64("select max(id) from {s}.outbox").await;
    let out = chain(&g, "sales", "2", None, 900).await;
    assert_eq!(outbox(&g, mark).await, vec![(c, "retired".into(), None)]);
    let retired = golden(&g, c).await;
    assert_eq!(
        (retired["status"].as_str(), retired["name"].as_str()),
        (Some("retired"), Some("Lee"))
    );
    let cause = g
        .client
        .query_one("select cause from g.outbox order by id desc limit 1", &[])
        .await
        .unwrap();
    assert_eq!(
        cause.get::<_, Json<Value>>(0).0,
        json!({"system": "sales", "source_key": "2", "topic": "t", "partition": 0, "offset": 900})
    );
    assert_eq!(out["identity"]["clusters"], json!([c]));
}

// ---------------------------------------------------------------------------
// The customer example end to end: pipelines.yaml on the mock cluster.

/// The golden records of a graph without their ids: (records' keys, golden row).
async fn golden_by_members(g: &Graph) -> BTreeMap<Vec<String>, Value> {
    g.client
        .query(
            &format!(
                "select array(select r.system || ':' || r.source_key from {s}.records r
                               where r.cluster_id = x.customer_id order by 1),
                        to_jsonb(x) - 'customer_id' - 'created_at' - 'updated_at' - 'split_from'
                   from {s}.golden x where x.status = 'active'",
                s = g.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, Json<Value>>(1).0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_record_is_source_order_whatever_order_events_arrive_in() {
    // One person in three systems, each record with its own birth date and
    // e-mail: first_non_null takes the record the sources showed first
    // (source time, then system), whichever event arrives first.
    let db = TestDb::new("id_oldest").await;
    let person =
        |birth: &str, email: &str| rec(Some("010-7"), Some(email), Some("Kim"), Some(birth));
    let events = [
        ("options", "5", person("1990-01-01", "o@x.com"), 300),
        ("crm", "9", person("1980-01-01", "c@x.com"), 100),
        ("sales", "2", person("1970-01-01", "s@x.com"), 100),
    ];
    let mut answers = Vec::new();
    for (n, order) in [[0, 1, 2], [2, 1, 0], [1, 0, 2]].iter().enumerate() {
        let schema = format!("g{n}");
        let g = Graph::new(&db, &schema, "").await;
        install(
            &db,
            &format!("{schema}.unify"),
            "identity_unify",
            &format!("schema: {schema}\nsource: {schema}.u\n{UNIFY}"),
        )
        .await;
        install(
            &db,
            &format!("{schema}.publish"),
            "identity_publish",
            &format!("schema: {schema}"),
        )
        .await;
        for &i in order {
            let (system, key, r, ts) = &events[i];
            chain(&g, system, key, Some(r), *ts).await;
        }
        let golden = golden_by_members(&g).await;
        // Created at 100 by both crm and sales: crm sorts first.
        let only = golden.values().next().unwrap();
        assert_eq!(
            (only["birth_date"].clone(), only["email"].clone()),
            (json!("1980-01-01"), json!("o@x.com")),
            "arrival order {order:?}"
        );
        // The bulk path agrees.
        g.client
            .batch_execute(&format!(
                "call {schema}.rebuild(); call {schema}.unify_all();"
            ))
            .await
            .unwrap();
        assert_eq!(
            golden_by_members(&g).await,
            golden,
            "rebuild after arrival order {order:?}"
        );
        answers.push(golden);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_must_link_override_joins_two_clusters_per_event_and_in_rebuild_until_revoked() {
    let db = TestDb::new("id_must_link").await;
    let g = Graph::new(&db, "g", "").await;
    install(
        &db,
        "g.unify",
        "identity_unify",
        &format!("schema: g\nsource: g.u\n{UNIFY}"),
    )
    .await;
    install(&db, "g.publish", "identity_publish", "schema: g").await;
    chain(
        &g,
        "crm",
        "1",
        Some(&rec(Some("p1"), None, Some("Kim"), None)),
        100,
    )
    .await;
    chain(
        &g,
        "sales",
        "2",
        Some(&rec(None, Some("e2"), Some("Kim M"), None)),
        200,
    )
    .await;
    let (a, b) = (g.cluster("crm", "1").await, g.cluster("sales", "2").await);
    assert_ne!(a, b);

    // Who and why are required; the records must exist.
    let refused = g
        .client
        .query_one(
            "select g.must_link('crm', '1', 'sales', '2', 'ana', ' ')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "22023");
    let refused = g
        .client
        .query_one(
            "select g.must_link('crm', '1', 'sales', '9', 'ana', 'called them')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .as_db_error()
            .unwrap()
            .message()
            .contains("no record sales:9 in the graph"),
        "{refused:?}"
    );

    let out: Json<Value> = g
        .client
        .query_one("select g.must_link('crm', '1', 'sales', '2', 'ana', 'same customer, confirmed by phone')", &[])
        .await
        .unwrap()
        .get(0);
    let id = out.0["override"].as_i64().unwrap();
    assert_eq!(out.0["merged"], json!({b.to_string(): a}));
    assert_eq!(g.cluster("sales", "2").await, a);
    // The golden record follows, and the outbox says why.
    assert_eq!(golden(&g, a).await["records"], json!(2));
    assert_eq!(golden(&g, b).await["status"], json!("merged"));
    let cause: Json<Value> = g
        .client
        .query_one(
            "select cause from g.outbox where change = 'merged_into'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cause.0, json!({"override": id, "by": "ana"}));
    let hops = explain(&g, ("crm", "1"), ("sales", "2")).await;
    assert_eq!(
        (hops[0].1.as_str(), &hops[0].2),
        ("must_link", &json!({"override": id}))
    );

    // A later event of either record keeps them together, and so does rebuild.
    chain(
        &g,
        "sales",
        "2",
        Some(&rec(None, Some("e3"), Some("Kim M"), None)),
        300,
    )
    .await;
    assert_eq!(g.cluster("sales", "2").await, g.cluster("crm", "1").await);
    g.client.batch_execute("call g.rebuild()").await.unwrap();
    assert_eq!(g.cluster("sales", "2").await, g.cluster("crm", "1").await);

    // Revoked: apart again, per event and in rebuild; the override stays on record.
    let out: Json<Value> = g
        .client
        .query_one("select g.revoke_override($1, 'ben')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        out.0["split"].as_object().map(|m| m.len()),
        Some(1),
        "{out:?}"
    );
    assert_ne!(g.cluster("sales", "2").await, g.cluster("crm", "1").await);
    g.client.batch_execute("call g.rebuild()").await.unwrap();
    assert_ne!(g.cluster("sales", "2").await, g.cluster("crm", "1").await);
    assert_eq!(
        g.i64("select count(*) from {s}.overrides where revoked_by = 'ben' and made_by = 'ana' and why = 'same customer, confirmed by phone'").await,
        1
    );
}

#[test]
fn a_rule_named_must_link_is_a_render_error() {
    let err = common::rendered(
        "g.link",
        "identity_link",
        "schema: g\nsource: g.u\nrules:\n  must_link: {columns: [phone]}",
    )
    .unwrap_err();
    assert!(
        err.contains(
            "rules: `must_link` is the rule of a steward's overrides; name the rule otherwise"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_example_runs_from_three_sources_to_golden_records_and_the_outbox() {
    use pgchain::samples::event;
    let db = TestDb::new("id_example").await;
    let topics = [
        "sales.public.customer",
        "options.public.member",
        "crm.contact",
    ];
    let kafka = common::Kafka::new(&topics.map(|t| (t, 2)));
    let config = common::example_config(&kafka, &db);

    // Kim is in all three systems: the same e-mail written three ways, the
    // phone in two formats. Lee is in sales only, and leaves. Park gives the
    // shop's switchboard number, as does Choi: that never links them.
    let kim = json!({"name": "Kim Minsu", "phone": "010-1234-5678", "email": " kim@example.com "});
    let kim_options =
        json!({"name": "MINSU KIM", "phone": "+82 10-1234-5678", "email": "KIM@EXAMPLE.COM"});
    let kim_crm = json!({"name": "Kim Minsu", "phone": "", "email": "Kim@Example.com"});
    let lee = json!({"name": "Lee Jiwoo", "phone": "010-2222-3333", "email": "lee@example.com"});
    let park = json!({"name": "Park", "phone": "1588-1234", "email": "park@example.com"});
    let choi = json!({"name": "Choi", "phone": "1588-1234", "email": "choi@example.com"});
    let t0 = 1_767_225_600_000;
    kafka
        .produce(vec![
            event(0, 1, "c", None, Some(&kim), t0),
            event(1, 1, "c", None, Some(&kim_options), t0 + 1000),
            event(2, 1, "c", None, Some(&kim_crm), t0 + 2000),
            event(0, 2, "c", None, Some(&lee), t0 + 3000),
            event(0, 3, "c", None, Some(&park), t0 + 4000),
            event(1, 4, "c", None, Some(&choi), t0 + 5000),
            event(0, 2, "d", Some(&lee), None, t0 + 6000),
        ])
        .await;
    let running = common::start(config);
    running.drained(&kafka, &topics).await;
    running.stop().await;

    let client = db.client().await;
    let rows = client
        .query(
            "select name, phone, email, phones, emails, systems, status from l2.customer where status <> 'merged' order by name",
            &[],
        )
        .await
        .unwrap();
    let customers: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!([
                r.get::<_, Option<String>>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Vec<String>>(3),
                r.get::<_, Vec<String>>(4),
                r.get::<_, Vec<String>>(5),
                r.get::<_, String>(6)
            ])
        })
        .collect();
    assert_eq!(
        customers,
        vec![
            json!([
                "Choi",
                "+8215881234",
                "choi@example.com",
                ["+8215881234"],
                ["choi@example.com"],
                ["options"],
                "active"
            ]),
            json!([
                "Kim Minsu",
                "+821012345678",
                "kim@example.com",
                ["+821012345678"],
                ["kim@example.com"],
                ["crm", "options", "sales"],
                "active"
            ]),
            json!([
                "Lee Jiwoo",
                "+821022223333",
                "lee@example.com",
                ["+821022223333"],
                ["lee@example.com"],
                ["sales"],
                "retired"
            ]),
            json!([
                "Park",
                "+8215881234",
                "park@example.com",
                ["+8215881234"],
                ["park@example.com"],
                ["sales"],
                "active"
            ]),
        ],
        "Kim's CRM name wins (source priority); the switchboard links no one"
    );
    // What downstream sees: each customer created, Kim updated as the other
    // systems joined, Lee retired (never deleted).
    let changes = db
        .strings("select c.name || ' ' || o.change from l2.customer_outbox o join l2.customer c using (customer_id) order by o.id")
        .await;
    let count = |what: &str| changes.iter().filter(|c| c.as_str() == what).count();
    // Kim's customer is the number of the oldest record at its source (the
    // sales record): when a younger record of Kim came first, its customer
    // was merged into that one.
    let merged = count("Kim Minsu merged_into");
    assert_eq!(count("Kim Minsu created"), 1 + merged, "{changes:?}");
    assert_eq!(
        (count("Lee Jiwoo created"), count("Lee Jiwoo retired")),
        (1, 1),
        "{changes:?}"
    );
    assert_eq!(
        (count("Park created"), count("Choi created")),
        (1, 1),
        "{changes:?}"
    );
    assert_eq!(
        changes.len() - count("Kim Minsu updated"),
        5 + 2 * merged,
        "{changes:?}"
    );
    // Why are the sales and the CRM record one customer:
    let why = db
        .strings(
            "select rule || ' ' || (matched->>'email') from idr.explain('sales', '1', 'crm', '1')",
        )
        .await;
    assert_eq!(why, ["email kim@example.com"]);

    // The steward asks the same from the command line.
    let ask = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
            .args([
                "identity",
                "explain",
                "-c",
                concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines.yaml"),
            ])
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let pair: Value = serde_json::from_str(&ask(&["sales:1", "crm:1", "--json"])).unwrap();
    assert_eq!(
        (
            &pair[0]["from"],
            &pair[0]["rule"],
            &pair[0]["matched"],
            &pair[0]["to"]
        ),
        (
            &json!("sales:1"),
            &json!("email"),
            &json!({"email": "kim@example.com"}),
            &json!("crm:1")
        )
    );
    let table = ask(&["options:M000001"]);
    assert!(
        table.lines().any(|l| l.starts_with("email ")
            && l.contains("email=kim@example.com")
            && l.contains("crm:1 options:M000001 sales:1")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("phone ") && l.contains("phone=+821012345678")),
        "{table}"
    );

    // Overrides from the command line: Park and Choi linked by hand, then
    // the override revoked; a record that does not exist is refused.
    let steward = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
            .arg("identity")
            .args(args)
            .args(["-c", concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines.yaml")])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap()
    };
    let linked = steward(&[
        "must-link",
        "sales:3",
        "options:M000004",
        "--by",
        "ana",
        "--why",
        "one shop owner",
    ]);
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let linked: Value = serde_json::from_slice(&linked.stdout).unwrap();
    let override_id = linked["override"].as_i64().unwrap();
    let hop: Value = serde_json::from_str(&ask(&["sales:3", "options:M000004", "--json"])).unwrap();
    assert_eq!(
        (&hop[0]["rule"], &hop[0]["matched"]),
        (&json!("must_link"), &json!({"override": override_id}))
    );
    let revoked = steward(&["revoke", &override_id.to_string(), "--by", "ben"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(ask(&["sales:3", "options:M000004"]).contains("are not linked"));
    let refused = steward(&[
        "must-link",
        "sales:3",
        "sales:99",
        "--by",
        "ana",
        "--why",
        "typo",
    ]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("idr.must_link: idr: no record sales:99 in the graph (SQLSTATE 22023)"),
        "{said}"
    );
    // Kim's sales record is someone else after all: kept apart from the
    // CRM record by hand, the cluster is cut (the constrained union takes
    // the phone first, the oldest records first: the sales record and the
    // options record join, the CRM's is held), and both golden records
    // follow.
    let apart = steward(&[
        "cannot-link",
        "sales:1",
        "crm:1",
        "--by",
        "ana",
        "--why",
        "a family's shared e-mail and phone",
    ]);
    assert!(
        apart.status.success(),
        "{}",
        String::from_utf8_lossy(&apart.stderr)
    );
    assert!(ask(&["sales:1", "crm:1"]).contains("are not linked"));
    let systems = |record: &str| {
        let (sys, key) = record.split_once(':').unwrap();
        format!("select c.systems::text || ' ' || c.status from l2.customer c join idr.records r on r.cluster_id = c.customer_id
                  where r.system = '{sys}' and r.source_key = '{key}'")
    };
    assert_eq!(
        db.strings(&systems("sales:1")).await,
        ["{options,sales} active"]
    );
    assert_eq!(db.strings(&systems("crm:1")).await, ["{crm} active"]);
    // The same after a rebuild.
    db.exec("call idr.rebuild(); call idr.unify_all()").await;
    assert_eq!(
        db.strings(&systems("sales:1")).await,
        ["{options,sales} active"]
    );
    assert_eq!(db.strings(&systems("crm:1")).await, ["{crm} active"]);

    // The shop's number never identified anyone (a representative number):
    // there is nothing generic to release.
    let release = steward(&[
        "release",
        "--rule",
        "phone",
        "--value",
        "+8215881234",
        "--by",
        "ana",
        "--why",
        "reviewed",
    ]);
    assert!(!release.status.success());
    let said = String::from_utf8_lossy(&release.stderr);
    assert!(
        said.contains(
            "idr.release_value: idr: phone value +8215881234 is not generic (SQLSTATE 22023)"
        ),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_source_unlinks_its_records_and_a_misplaced_step_says_why() {
    let db = TestDb::new("id_truncate").await;
    let g = Graph::new(&db, "g", "").await;
    g.put("crm", "1", &rec(Some("p1"), None, None, None)).await;
    g.put("sales", "1", &rec(Some("p1"), Some("e1"), None, None))
        .await;
    g.put("crm", "2", &rec(None, Some("e1"), None, None)).await;
    let x = g.cluster("crm", "1").await;
    assert_eq!(g.cluster("crm", "2").await, x);
    // l1_cleanse hands a truncate over as {system, truncated}.
    g.client
        .batch_execute("delete from g.u where system = 'crm'")
        .await
        .unwrap();
    let ev = json!({"op": "t", "record": {"system": "crm", "truncated": true}});
    let row = g
        .client
        .query_one("call g.link($1)", &[&Json(ev)])
        .await
        .unwrap();
    let out = row.get::<_, Json<Value>>(0).0;
    let sales = g.records().await[&id("sales", "1")].0;
    assert_eq!(
        out["identity"]["clusters"],
        json!([
            x,
            sales,
            g.i64("select id from {s}.ids where system = 'crm' and source_key = '2'")
                .await
        ])
    );
    let left = g.records().await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec![id("sales", "1")]
    );
    assert_eq!(
        g.cluster("sales", "1").await,
        sales,
        "alone, the record's own number is its cluster's id"
    );

    // A link step without l1_cleanse before it: a data error that says so.
    let err = g
        .client
        .query_one("call g.link($1)", &[&Json(json!({"op": "c"}))])
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "22023");
    assert_eq!(
        db_err.message(),
        "g.link: the event has no `record` {system, source_key}; an l1_cleanse step must come first"
    );
}

#[test]
fn an_unknown_unify_rule_is_a_render_error_that_names_it() {
    let yaml = "kafka:\n  brokers: k\npipelines:\n  p:\n    topic: t\n    chain: [g.unify]\nprocedures:\n  g.unify:\n    template: identity_unify\n    vars:\n      schema: g\n      source: g.u\n      columns: {name: {rule: longest}}\n";
    let config =
        pgchain::config::Config::from_text(yaml, std::path::Path::new("p.yaml"), |_| None).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let err = pgchain::render::render_all(
        &config,
        &root.join("sql/templates"),
        &root.join("sql/migrations"),
    )
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(
        err[0].starts_with("p.yaml:8: procedure `g.unify`: built-in template identity_unify.sql.j2:")
            && err[0].ends_with("column `name`: unknown rule `longest` (source_priority, most_recent, most_frequent or first_non_null)"),
        "{}",
        err[0]
    );
}

/// The graph's state equals what rebuild decides from the same records:
/// clusters with their ids, generic values, held links.
async fn equals_rebuild(g: &Graph) {
    let before = decided_on(&g.client, &g.schema).await.unwrap();
    let ids = g.records().await;
    g.client
        .batch_execute(&format!("call {}.rebuild()", g.schema))
        .await
        .unwrap();
    assert_eq!(g.records().await, ids, "rebuild keeps clusters and ids");
    assert_eq!(
        same(&decided_on(&g.client, &g.schema).await.unwrap(), &before),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generic_value_links_again_when_its_bearers_fall_back_under_the_limit() {
    let db = TestDb::new("id_ungeneric").await;
    let g = Graph::new(&db, "g", "").await;
    // phone allows 3 clusters: four people apart behind one switchboard.
    for k in ["1", "2", "3", "4"] {
        g.put("crm", k, &rec(Some("p0"), None, None, None)).await;
    }
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 1);
    assert_eq!(
        g.i64("select count(distinct cluster_id) from {s}.records")
            .await,
        4
    );
    equals_rebuild(&g).await;
    // One of them goes: three bearers are no longer too many, and the number
    // links them, per event as in rebuild.
    let out = g.delete("crm", "4").await;
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 0);
    assert_eq!(
        g.i64("select count(distinct cluster_id) from {s}.records")
            .await,
        1
    );
    let one = g.cluster("crm", "1").await;
    assert_eq!(
        out["merged"],
        json!({g.number("crm", "2").await.to_string(): one, g.number("crm", "3").await.to_string(): one})
    );
    equals_rebuild(&g).await;
    // Four bearers again, but two of them one person by e-mail: three base
    // components, so not generic either.
    g.put("crm", "1", &rec(Some("p0"), Some("e1"), None, None))
        .await;
    g.put("crm", "4", &rec(Some("p0"), Some("e1"), None, None))
        .await;
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 0);
    assert_eq!(
        g.i64("select count(distinct cluster_id) from {s}.records")
            .await,
        1
    );
    equals_rebuild(&g).await;
    // The e-mail goes: four components, generic; everyone apart.
    g.put("crm", "4", &rec(Some("p0"), None, None, None)).await;
    assert_eq!(g.i64("select count(*) from {s}.generic").await, 1);
    assert_eq!(
        g.i64("select count(distinct cluster_id) from {s}.records")
            .await,
        4
    );
    equals_rebuild(&g).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cannot_link_override_splits_a_cluster_per_event_and_in_rebuild_until_revoked() {
    let db = TestDb::new("id_cannot_link").await;
    let g = Graph::new(&db, "g", "").await;
    // Three records of one family share an e-mail; a and c are two people.
    for k in ["a", "b", "c"] {
        g.put("crm", k, &rec(None, Some("family@x.com"), None, None))
            .await;
    }
    let x = g.cluster("crm", "a").await;
    assert_eq!(g.cluster("crm", "c").await, x);
    let out: Json<Value> = g
        .client
        .query_one(
            "select g.cannot_link('crm', 'a', 'crm', 'c', 'ana', 'two people, one family e-mail')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The constrained union takes the e-mail's bearers oldest first: a, b
    // join; c would join a, and is held. c is its own cluster, by its own
    // number.
    let c = g.cluster("crm", "c").await;
    assert_eq!(g.cluster("crm", "b").await, x);
    assert_ne!(c, x);
    assert_eq!(out.0["split"], json!({c.to_string(): x}), "{out:?}");
    let review = g
        .client
        .query_one(
            "select reason, system || ':' || source_key from g.review",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (review.get::<_, String>(0), review.get::<_, String>(1)),
        ("cannot_link".into(), "crm:c".into())
    );
    // Per event: c's update re-decides and keeps it apart; a record joining
    // by the same e-mail goes where the order says, never joins the two.
    g.put(
        "crm",
        "c",
        &rec(Some("p9"), Some("family@x.com"), None, None),
    )
    .await;
    g.put(
        "crm",
        "d",
        &rec(Some("p9"), Some("family@x.com"), None, None),
    )
    .await;
    assert_ne!(g.cluster("crm", "a").await, g.cluster("crm", "c").await);
    equals_rebuild(&g).await;
    // A must-link of the same two records is refused while it holds.
    let refused = g
        .client
        .query_one(
            "select g.must_link('crm', 'a', 'crm', 'c', 'ben', 'same?')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "22023");
    let said = refused.as_db_error().unwrap().message();
    assert!(said.contains("says the opposite"), "{said}");
    // Revoked: one family cluster again.
    let id = g
        .i64("select id from {s}.overrides where kind = 'cannot_link'")
        .await;
    g.client
        .query_one("select g.revoke_override($1, 'ana')", &[&id])
        .await
        .unwrap();
    assert_eq!(g.cluster("crm", "c").await, x);
    assert_eq!(g.cluster("crm", "d").await, x);
    equals_rebuild(&g).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graph_from_before_permanent_numbers_keeps_its_customer_ids() {
    let db = TestDb::new("id_upgrade").await;
    let g = Graph::new(&db, "g", "").await;
    for (k, p, ts) in [("1", "p1", 30), ("2", "p1", 10), ("3", "p2", 20)] {
        write_union(
            &g.client,
            "g",
            "crm",
            k,
            Some(&rec(Some(p), None, None, None)),
            Some(ts),
        )
        .await
        .unwrap();
        g.link("crm", k).await.unwrap();
    }
    // As an earlier version left it: records numbered apart from the
    // cluster ids, no registry, no source order in the graph.
    g.client
        .batch_execute(
            "delete from g.ids;
             update g.keys set seq = seq + 1000; update g.records set seq = seq + 1000, created = null;
             update g.records set cluster_id = 7 where source_key in ('1', '2');
             update g.records set cluster_id = 9 where source_key = '3';
             select setval('g.cluster_ids', 9);",
        )
        .await
        .unwrap();
    // The upgrade: the template installed again.
    install(
        &db,
        "g.link",
        "identity_link",
        &format!("schema: g\nsource: g.u\n{RULES}\n"),
    )
    .await;
    assert_eq!(g.cluster("crm", "1").await, 7);
    assert_eq!(g.cluster("crm", "3").await, 9);
    // The oldest record at its source (crm/2) carries the cluster's id.
    let recs = g.records().await;
    assert_eq!(recs[&id("crm", "2")], (7, 7));
    assert_eq!(recs[&id("crm", "3")], (9, 9));
    assert!(recs[&id("crm", "1")].0 > 9, "{recs:?}");
    assert_eq!(
        g.i64("select count(*) from {s}.keys where seq > 1000")
            .await,
        0
    );
    equals_rebuild(&g).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_change_relinks_everything_while_the_pipelines_run() {
    use pgchain::samples::event;
    let db = TestDb::new("id_relink").await;
    let topics = [
        "sales.public.customer",
        "options.public.member",
        "crm.contact",
    ];
    let kafka = common::Kafka::new(&topics.map(|t| (t, 2)));
    let config = common::example_config(&kafka, &db);
    // 40 people in three systems: shared names, phones and e-mails link
    // them under the example's rules.
    let person = |i: i64| {
        json!({"name": format!("Person {}", i % 40), "phone": format!("010-1000-{:04}", i % 60),
               "email": format!("p{}@example.com", i % 50)})
    };
    let t0 = 1_767_225_600_000;
    let wave = |from: i64, to: i64| {
        (from..to)
            .map(|i| event(i % 3, i, "c", None, Some(&person(i)), t0 + i))
            .collect::<Vec<_>>()
    };
    kafka.produce(wave(0, 150)).await;
    let running = common::start(config);
    running
        .until("the first events", |s| {
            s.pipelines.values().map(|p| p.applied).sum::<u64>() >= 30
        })
        .await;

    // The rules change while events flow: e-mail no longer links. The new
    // link procedure goes in as a migration would put it, then the
    // steward's command re-links everything, while more events come.
    let vars = "schema: idr\nsource: l1.member_union\nrules:\n  phone: {columns: [phone], when: phone_identifies, max_clusters: 5}\n  name_birth: {columns: [name, birth_date]}\nmax_cluster_size: 50";
    // DDL beside running chains may meet one in a deadlock; PostgreSQL then
    // rolls the migration back whole, and it is run again.
    let sql = common::rendered("idr.link_member", "identity_link", vars).unwrap();
    let admin = db.client().await;
    while let Err(e) = admin.batch_execute(&sql).await {
        let code = e.code().map(|c| c.code().to_string());
        assert!(matches!(code.as_deref(), Some("40P01" | "40001")), "{e:?}");
    }
    let more = kafka.produce(wave(150, 300));
    let relink = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
                .args(["identity", "relink", "-c"])
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines.yaml"))
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        }
    });
    more.await;
    let out = relink.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("records re-linked into"), "{said}");
    running.drained(&kafka, &topics).await;
    let stats = running.stop().await;
    let applied: u64 = stats.pipelines.values().map(|p| p.applied).sum();
    assert_eq!(applied, 300, "{stats:?}");
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);

    // The graph is what the new rules give from the records: the same after
    // one more rebuild, and no two records of one cluster share only an
    // e-mail any more; every cluster has its active golden record.
    let g = Graph {
        client: db.client().await,
        schema: "idr".into(),
    };
    let before = g.records().await;
    assert_eq!(before.len(), 300);
    g.client.batch_execute("call idr.rebuild()").await.unwrap();
    assert_eq!(
        g.records().await,
        before,
        "the running chains and the re-link agree with rebuild"
    );
    assert_eq!(
        db.i64("select count(*) from idr.keys where rule = 'email'")
            .await,
        0
    );
    assert_eq!(
        db.i64("select count(*) from l2.customer where status = 'active'")
            .await,
        db.i64("select count(distinct cluster_id) from idr.records")
            .await
    );
}
