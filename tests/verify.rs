//! `pgchain verify`: planted differences found exactly (missing, extra,
//! changed, on the range edges), and `--repair` makes a second verify clean.

mod common;

use common::*;
use std::process::Command;

const SOURCE: &str = "
create schema src;
create table src.items (shop text, id int, name text, qty int, updated timestamptz,
                        primary key (shop, id));
insert into src.items
select s, i, 'item ' || i, i % 97, timestamptz '2026-01-01' + i * interval '1 minute'
  from unnest(array['a', 'b', 'c']) s, generate_series(1, 1700) i;";

const TARGET: &str = "
create schema tgt;
create table tgt.items (shop text, id int, name text, qty int, updated timestamptz,
                       _applied_at timestamptz not null default clock_timestamp(),
                       primary key (shop, id));
create procedure t.upsert_items(inout ev jsonb) language plpgsql as $$
begin
  if ev->>'op' = 'd' then
    delete from tgt.items where shop = ev->'key'->>'shop' and id = (ev->'key'->>'id')::int;
  else
    insert into tgt.items (shop, id, name, qty, updated)
    values (ev->'after'->>'shop', (ev->'after'->>'id')::int, ev->'after'->>'name',
            (ev->'after'->>'qty')::int, (ev->'after'->>'updated')::timestamptz)
    on conflict (shop, id) do update
       set name = excluded.name, qty = excluded.qty, updated = excluded.updated;
  end if;
end $$;";

/// The differences planted in the target: the first and last keys of the
/// table, keys before and after it, a null against a value, and keys in the
/// middle.
const PLANT: &str = "
delete from tgt.items where (shop, id) in (('a', 1), ('c', 1700), ('b', 850), ('b', 851));
insert into tgt.items (shop, id, name, qty, updated) values
  ('a', 0, 'extra', 1, now()), ('c', 1701, 'extra', 1, now()), ('b', 5000, 'extra', 1, now());
update tgt.items set qty = qty + 1 where (shop, id) in (('a', 2), ('c', 1699), ('b', 1));
update tgt.items set name = null where (shop, id) = ('a', 900);
update tgt.items set updated = updated + interval '1 second' where (shop, id) = ('c', 2);";

fn verify(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .arg("verify")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            k.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_finds_exactly_the_planted_differences_and_repair_fixes_them() {
    let source = TestDb::new("vsrc").await;
    source.exec(SOURCE).await;
    let target = TestDb::new("vtgt").await;
    target.exec(TEST_STEPS).await;
    target.exec(TARGET).await;
    copy_rows(&source, &target).await;
    target.exec(PLANT).await;

    let kafka = Kafka::new(&[("shop.src.items", 2)]);
    let yaml = "kafka:\n  brokers: {brokers}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
                postgres:\n  url: {url}\n\
                pipelines:\n  items:\n    topic: shop.src.items\n    chain: [t.upsert_items]\n";
    let text = yaml
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &target.url);
    let dir = temp_dir("verify");
    let path = dir.join("p.yaml");
    std::fs::write(&path, &text).unwrap();
    let cfg = path.to_str().unwrap();
    let common_args = [
        "--source",
        source.url.as_str(),
        "--table",
        "src.items",
        "--target",
        "tgt.items",
        "--key",
        "shop,id",
        "-c",
        cfg,
        "--leaf-rows",
        "64",
    ];

    let (code, report) = verify(&common_args);
    assert_eq!(code, 1, "differences exit 1: {report}");
    assert_eq!(report["source_rows"], 5100);
    assert_eq!(report["target_rows"], 5100 - 4 + 3);
    assert_eq!(
        keys(&report["missing"]),
        ["a/1", "b/850", "b/851", "c/1700"]
    );
    assert_eq!(keys(&report["extra"]), ["a/0", "b/5000", "c/1701"]);
    assert_eq!(
        keys(&report["changed"]),
        ["a/2", "a/900", "b/1", "c/2", "c/1699"]
    );
    // The hashing happened in the databases: far fewer rows than the tables
    // came over.
    let moved = report["rows_transferred"].as_i64().unwrap();
    assert!(moved < 2500, "{moved} rows transferred");

    let mut args = common_args.to_vec();
    args.push("--repair");
    let (code, report) = verify(&args);
    assert_eq!(code, 1);
    assert_eq!(report["repaired"], 12, "{report}");

    let run = start(config(yaml, &kafka, &target));
    run.drained(&kafka, &["shop.src.items"]).await;
    run.stop().await;
    let (code, report) = verify(&common_args);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["target_rows"], 5100);
    assert!(report["missing"].as_array().unwrap().is_empty());
}

/// Copies src.items into tgt.items (two databases on one server share no
/// tables).
async fn copy_rows(source: &TestDb, target: &TestDb) {
    let rows = source
        .client()
        .await
        .query("select shop, id, name, qty, updated from src.items", &[])
        .await
        .unwrap();
    let t = target.client().await;
    let stmt = t
        .prepare("insert into tgt.items (shop, id, name, qty, updated) values ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    for r in rows {
        let (s, i, n, q, u): (String, i32, Option<String>, i32, std::time::SystemTime) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        t.execute(&stmt, &[&s, &i, &n, &q, &u]).await.unwrap();
    }
}
