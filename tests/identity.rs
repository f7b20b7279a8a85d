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

/// A union table like l1_cleanse's, with the columns the rules use.
fn union_sql(schema: &str) -> String {
    format!(
        "create schema {schema};
         create table {schema}.u (system text not null, source_key text not null, name text, phone text,
           phone_ok boolean default true, email text, birth_date text, source_ts_ms bigint,
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

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
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
        self.client
            .execute(
                &format!(
                    "insert into {}.u (system, source_key, name, phone, email, birth_date) values ($1, $2, $3, $4, $5, $6)
                     on conflict (system, source_key) do update set name = $3, phone = $4, email = $5, birth_date = $6",
                    self.schema
                ),
                &[&system, &key, &r.name, &r.phone, &r.email, &r.birth],
            )
            .await
            .unwrap();
        self.link(system, key).await.unwrap()
    }

    async fn delete(&self, system: &str, key: &str) -> Value {
        self.client
            .execute(
                &format!(
                    "delete from {}.u where system = $1 and source_key = $2",
                    self.schema
                ),
                &[&system, &key],
            )
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
// The from-scratch model.

/// The key values of a record, as the rules define them: every column of the
/// rule non-blank (trimmed), several columns joined with U+001F.
fn key_values(r: &Rec) -> Vec<(String, String)> {
    let t = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let mut out = Vec::new();
    if let Some(p) = t(&r.phone) {
        out.push(("phone".to_string(), p));
    }
    if let Some(e) = t(&r.email) {
        out.push(("email".to_string(), e));
    }
    if let (Some(n), Some(b)) = (t(&r.name), t(&r.birth)) {
        out.push(("name_birth".to_string(), format!("{n}\u{1f}{b}")));
    }
    out
}

/// Connected components over the records, linked by shared key values
/// except `generic` values and `held` edges.
fn components(
    recs: &BTreeMap<(String, String), Rec>,
    generic: &BTreeSet<(String, String)>,
    held: &BTreeSet<((String, String), (String, String))>,
) -> BTreeSet<BTreeSet<(String, String)>> {
    let ids: Vec<&(String, String)> = recs.keys().collect();
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut bearer: HashMap<(String, String), usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        for kv in key_values(&recs[*id]) {
            if generic.contains(&kv) || held.contains(&((*id).clone(), kv.clone())) {
                continue;
            }
            match bearer.get(&kv) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
                None => {
                    bearer.insert(kv, i);
                }
            }
        }
    }
    let mut by: BTreeMap<usize, BTreeSet<(String, String)>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let root = find(&mut parent, i);
        by.entry(root).or_default().insert((*id).clone());
    }
    by.into_values().collect()
}

/// Generic values and held edges as the graph recorded them.
async fn guards(
    g: &Graph,
) -> (
    BTreeSet<(String, String)>,
    BTreeSet<((String, String), (String, String))>,
) {
    let generic = g
        .client
        .query(
            &format!("select rule, value from {}.generic", g.schema),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect::<BTreeSet<(String, String)>>();
    let held = g
        .client
        .query(
            &format!(
                "select r.system, r.source_key, k.rule, k.value from {s}.keys k join {s}.records r using (seq)
                  where not k.links and not exists (select 1 from {s}.generic x where x.rule = k.rule and x.value = k.value)",
                s = g.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    (generic, held)
}

/// After one change: the clusters equal the from-scratch components, and
/// every cluster's id follows the survivor rule: the smallest id among the
/// old clusters whose oldest remaining record it holds, else a new id
/// (larger than every id seen before).
async fn check(
    g: &Graph,
    model: &BTreeMap<(String, String), Rec>,
    before: &BTreeMap<(String, String), (i64, i64)>,
    max_seen: &mut i64,
    max_size: Option<usize>,
) -> Result<(), String> {
    let after = g.records().await;
    let linked: BTreeSet<_> = after.keys().cloned().collect();
    let present: BTreeSet<_> = model.keys().cloned().collect();
    if linked != present {
        return Err(format!(
            "linked records {linked:?} != union records {present:?}"
        ));
    }
    let (generic, held) = guards(g).await;
    let expected = components(model, &generic, &held);
    let got = partition(&after);
    if got != expected {
        return Err(format!(
            "clusters {got:?} != components from scratch {expected:?} (generic {generic:?}, held {held:?})"
        ));
    }
    if let Some(max) = max_size
        && let Some(big) = got.iter().find(|c| c.len() > max)
    {
        return Err(format!("cluster {big:?} exceeds max_cluster_size {max}"));
    }
    // Oldest remaining record of each old cluster.
    let mut oldest: BTreeMap<i64, (i64, (String, String))> = BTreeMap::new();
    for (k, (seq, c)) in before {
        if after.contains_key(k) {
            let e = oldest.entry(*c).or_insert((*seq, k.clone()));
            if *seq < e.0 {
                *e = (*seq, k.clone());
            }
        }
    }
    let mut new_ids = BTreeSet::new();
    for cluster in &got {
        let id = after[cluster.iter().next().unwrap()].1;
        let keeps = oldest
            .iter()
            .filter(|(_, (_, k))| cluster.contains(k))
            .map(|(c, _)| *c)
            .min();
        match keeps {
            Some(k) if k != id => {
                return Err(format!(
                    "cluster {cluster:?} has id {id}, the survivor rule says {k}"
                ));
            }
            None if id <= *max_seen || !new_ids.insert(id) => {
                return Err(format!(
                    "cluster {cluster:?} needs a new id, got {id} (ids seen up to {max_seen})"
                ));
            }
            _ => {}
        }
    }
    for (seq, c) in after.values() {
        let _ = seq;
        *max_seen = (*max_seen).max(*c);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Property test.

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Rec),
    Delete(usize),
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
    prop_oneof![
        4 => (0..10usize, rec).prop_map(|(i, r)| Op::Put(i, r)),
        1 => (0..10usize).prop_map(Op::Delete),
    ]
}

fn cases() -> u32 {
    std::env::var("PGCHAIN_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Runs `ops` from an empty graph, checking after every change.
async fn run_ops(g: &Graph, ops: &[Op], max_size: Option<usize>) -> Result<(), String> {
    g.client
        .batch_execute(&format!(
            "delete from {s}.u; delete from {s}.records; delete from {s}.keys; delete from {s}.generic;
             delete from {s}.history; delete from {s}.review;",
            s = g.schema
        ))
        .await
        .unwrap();
    let mut model: BTreeMap<(String, String), Rec> = BTreeMap::new();
    let mut max_seen = g
        .i64("select case when is_called then last_value else 0 end from {s}.cluster_ids")
        .await;
    for (n, op) in ops.iter().enumerate() {
        let before = g.records().await;
        match op {
            Op::Put(i, r) => {
                let (sys, key) = record_id(*i);
                g.put(&sys, &key, r).await;
                model.insert((sys, key), r.clone());
            }
            Op::Delete(i) => {
                let (sys, key) = record_id(*i);
                g.delete(&sys, &key).await;
                model.remove(&(sys, key));
            }
        }
        check(g, &model, &before, &mut max_seen, max_size)
            .await
            .map_err(|e| format!("after op {n} ({op:?}): {e}"))?;
    }
    Ok(())
}

fn property(label: &str, extra: &'static str, max_size: Option<usize>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (db, g) = rt.block_on(async {
        let db = TestDb::new(label).await;
        let g = Graph::new(&db, "g", extra).await;
        (db, g)
    });
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..24))| {
        let result = rt.block_on(run_ops(&g, &ops, max_size));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
    drop(g);
    drop(db);
}

#[test]
fn incremental_clusters_equal_components_from_scratch() {
    // max_clusters 3 on phone: the generic guard is live too.
    property("prop_free", "", None);
}

#[test]
fn incremental_clusters_equal_components_with_a_maximum_cluster_size() {
    property("prop_max", "max_cluster_size: 3", Some(3));
}
