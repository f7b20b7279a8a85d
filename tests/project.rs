//! A project of one's own, as a new user makes and runs it: `pgchain init`,
//! then render → migrate → check → `run --until-drained`, from another
//! working directory, against a fresh database and the embedded Kafka.

mod common;

use common::{Kafka, TestDb, record, temp_dir};
use pgchain::kafka::Record;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary in `cwd` with exactly these database and broker settings.
fn pgchain_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgchain"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("PGCHAIN_GROUP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgchain")
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One fixture message (tests/fixtures/debezium) onto `topic`.
fn fixture(topic: &str, name: &str, tombstone: bool) -> Record {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium");
    let key = std::fs::read_to_string(dir.join(format!("{name}.key.json"))).unwrap();
    let value = (!tombstone)
        .then(|| std::fs::read_to_string(dir.join(format!("{name}.value.json"))).unwrap());
    record(topic, Some(&key), value.as_deref())
}

/// A new project `name` from `example`, written from a working directory
/// that is not its folder; returns (the folder, the working directory).
fn init(label: &str, example: &str) -> (PathBuf, PathBuf) {
    let cwd = temp_dir(label);
    let out = pgchain_in(&cwd, &["init", "projects/shop", "--example", example], &[]);
    let text = ok(&out, "init");
    assert!(
        text.contains("wrote projects/shop/pipelines.yaml"),
        "{text}"
    );
    let dir = cwd.join("projects/shop");
    // Only the user's own files: no pgchain runtime among the migrations.
    for f in files(&dir.join("sql/migrations")) {
        assert!(!f.contains("pgchain"), "runtime file {f} in the project");
    }
    assert!(dir.join("sql/templates").is_dir());
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for step in [
        "pgchain render",
        "pgchain migrate",
        "pgchain check",
        "pgchain run",
    ] {
        assert!(readme.contains(step), "README names `{step}`");
    }
    // It never overwrites.
    let again = pgchain_in(&cwd, &["init", "projects/shop"], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("never overwrites"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    (dir, cwd)
}

/// migrate, check and `run --until-drained` with `-c projects/shop/pipelines.yaml`
/// from `cwd`; returns what the run printed.
/// What `run --until-drained` printed, its log included.
fn migrate_check_drain(cwd: &Path, env: &[(&str, &str)], pipelines: usize) -> String {
    let c = "projects/shop/pipelines.yaml";
    let migrated = ok(&pgchain_in(cwd, &["migrate", "-c", c], env), "migrate");
    assert!(migrated.contains("pgchain runtime: applied"), "{migrated}");
    let checked = ok(&pgchain_in(cwd, &["check", "-c", c], env), "check");
    assert!(
        checked.ends_with(&format!("{c}: {pipelines} pipeline(s) ok\n")),
        "{checked}"
    );
    assert!(checked.contains("broker(s) answered at"), "{checked}");
    let out = pgchain_in(cwd, &["run", "-c", c, "--until-drained"], env);
    let printed = ok(&out, "run --until-drained");
    assert!(
        printed.contains("drained to the high watermarks seen at start"),
        "{printed}"
    );
    format!("{printed}{}", String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blank_project_renders_migrates_checks_and_drains() {
    let (dir, cwd) = init("init-blank", "blank");
    assert_eq!(
        files(&dir),
        ["README.md", "pipelines.yaml", "sql/templates/README.md"]
    );
    let db = TestDb::empty("init_blank").await;
    let topic = "app.public.customer";
    let kafka = Kafka::new(&[(topic, 2)]);
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", kafka.brokers.as_str()),
        ("PGCHAIN_GROUP", "shop"),
    ];
    let rendered = ok(
        &pgchain_in(
            &cwd,
            &["render", "-c", "projects/shop/pipelines.yaml"],
            &env,
        ),
        "render",
    );
    assert_eq!(
        rendered,
        "wrote projects/shop/sql/migrations/V1__l0_copy_customer.sql (l0.copy_customer)\n"
    );
    assert!(
        !cwd.join("sql").exists(),
        "nothing written to the working directory"
    );
    // Debezium's own event shapes (tests/fixtures/README.md).
    kafka
        .produce(vec![
            fixture(topic, "pg_snapshot_read", false),
            fixture(topic, "pg_create_envelope", false),
            fixture(topic, "pg_update_plain", false),
            fixture(topic, "pg_delete_plain", false),
            fixture(topic, "pg_delete_tombstone", true),
        ])
        .await;
    let printed = migrate_check_drain(&cwd, &env, 1);
    assert!(printed.contains("customer"), "{printed}");
    // status and dlq read the same project from elsewhere too.
    let status = ok(
        &pgchain_in(
            &cwd,
            &["status", "--json", "-c", "projects/shop/pipelines.yaml"],
            &env,
        ),
        "status",
    );
    let rows: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{status}");
    let dlq = ok(
        &pgchain_in(
            &cwd,
            &[
                "dlq",
                "list",
                "--json",
                "-c",
                "projects/shop/pipelines.yaml",
            ],
            &env,
        ),
        "dlq list",
    );
    assert_eq!(dlq.trim(), "[]");
    let rows = db
        .strings("select concat_ws(' ', id, name, phone, email) from l0.customer order by id")
        .await;
    assert_eq!(
        rows,
        [
            "1000 Park Jiho 010-3456-7890 jiho.park@example.net",
            "1001 Kim Minjun 010-9876-5432 minjun.kim@example.com"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_campaign_example_as_a_project_joins_every_member_complete() {
    let (dir, cwd) = init("init-campaign", "campaign");
    assert_eq!(
        files(&dir.join("sql/migrations")),
        [
            "V1__campaign_member.sql",
            "V2__campaign_consent.sql",
            "V3__campaign_terms.sql"
        ]
    );
    let db = TestDb::empty("init_campaign").await;
    let kafka = Kafka::new(&[
        ("shop.public.member", 2),
        ("shop.public.marketing_consent", 2),
        ("shop.public.terms_agreement", 2),
    ]);
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", kafka.brokers.as_str()),
    ];
    let c = "projects/shop/pipelines.yaml";
    let check = pgchain_in(&cwd, &["render", "--check", "-c", c], &env);
    assert_eq!(ok(&check, "render --check"), "3 procedure(s) up to date\n");
    kafka.produce(pgchain::samples::campaign_events(60)).await;
    let printed = migrate_check_drain(&cwd, &env, 3);
    assert_eq!(
        db.i64("select count(*) from campaign.target_member").await,
        60
    );
    let incomplete = db
        .strings(
            "select member_id::text from campaign.target_member
              where sms_ok is null or terms_version is null order by member_id",
        )
        .await;
    let letters = db
        .strings(
            "select concat_ws(' ', id, pipeline, entity_key::text, status, error_class, awaits, replays, resolution)
               from pgchain.dead_letters order by id",
        )
        .await;
    assert!(
        incomplete.is_empty(),
        "every member complete, early side rows included; incomplete: {incomplete:?}\n\
         dead letters:\n{}\nrun printed:\n{printed}",
        letters.join("\n")
    );
    assert_eq!(
        db.i64("select count(*) from pgchain.dead_letters where status <> 'replayed'")
            .await,
        0,
        "side rows that came before their member were replayed, none left waiting"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_example_as_a_project_links_every_record() {
    let (_dir, cwd) = init("init-customer", "customer");
    let db = TestDb::empty("init_customer").await;
    let topics = [
        "sales.public.customer",
        "options.public.member",
        "crm.contact",
    ];
    let kafka = Kafka::new(&[(topics[0], 3), (topics[1], 3), (topics[2], 3)]);
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", kafka.brokers.as_str()),
    ];
    let c = "projects/shop/pipelines.yaml";
    let check = pgchain_in(&cwd, &["render", "--check", "-c", c], &env);
    assert_eq!(ok(&check, "render --check"), "9 procedure(s) up to date\n");
    let records = pgchain::samples::sample_events(60);
    let produced = records.len();
    kafka.produce(records).await;
    let printed = migrate_check_drain(&cwd, &env, 3);
    assert!(
        printed.contains(&format!("{produced} events in")),
        "{printed}"
    );
    // Every offset applied once: the ledger reaches each partition's end.
    let marks = pgchain::kafka::high_watermarks(&kafka.brokers, &topics.map(String::from)).unwrap();
    for ((topic, partition), high) in marks {
        if high > 0 {
            assert_eq!(
                db.applied("pgchain", &topic, partition).await,
                Some(high - 1),
                "{topic}/{partition}"
            );
        }
    }
    let union = db.i64("select count(*) from l1.member_union").await;
    assert!(union > 0);
    assert_eq!(db.i64("select count(*) from idr.records").await, union);
    assert_eq!(
        db.i64("select count(distinct cluster_id) from idr.records")
            .await,
        db.i64("select count(*) from l2.customer where status = 'active'")
            .await,
        "one golden record per cluster"
    );
    assert!(db.i64("select count(*) from l2.customer_outbox").await > 0);
}

#[test]
fn a_projects_own_template_overrides_the_built_in_one() {
    let (dir, cwd) = init("init-override", "blank");
    std::fs::write(
        dir.join("sql/templates/l0_upsert.sql.j2"),
        "-- the project's own raw copy\ncreate or replace procedure {{ procedure }}(inout ev jsonb) language plpgsql as $$ begin null; end $$;\n",
    )
    .unwrap();
    let c = "projects/shop/pipelines.yaml";
    let listed = ok(
        &pgchain_in(&cwd, &["render", "--list-templates", "-c", c], &[]),
        "--list-templates",
    );
    assert!(
        listed.contains("l0_upsert            projects/shop/sql/templates/l0_upsert.sql.j2 (overrides the built-in)\n"),
        "{listed}"
    );
    assert!(
        listed.contains("sink_upsert          built in\n"),
        "{listed}"
    );
    ok(&pgchain_in(&cwd, &["render", "-c", c], &[]), "render");
    let sql = std::fs::read_to_string(dir.join("sql/migrations/V1__l0_copy_customer.sql")).unwrap();
    assert!(sql.contains("-- the project's own raw copy"), "{sql}");
}

/// A project whose one pipeline records the id of every event it applies.
fn recording_project(label: &str, group: &str, start_from: Option<&str>) -> (PathBuf, PathBuf) {
    let cwd = temp_dir(label);
    let dir = cwd.join("p");
    std::fs::create_dir_all(dir.join("sql/migrations")).unwrap();
    let start = start_from.map_or(String::new(), |s| format!("  start_from: {s}\n"));
    std::fs::write(
        dir.join("pipelines.yaml"),
        format!(
            "kafka:\n  brokers: ${{KAFKA_BROKERS}}\n  group_id: {group}\n{start}postgres:\n  url: ${{DATABASE_URL}}\n\
             pipelines:\n  orders:\n    topic: shop.orders\n    format: json\n    key: [id]\n    chain: [t.record]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/migrations/V1__record.sql"),
        "create schema t;\ncreate table t.seen (id bigint not null);\n\
         create procedure t.record(inout ev jsonb) language plpgsql as $$\n\
         begin insert into t.seen values ((ev->'key'->>'id')::bigint); end $$;\n",
    )
    .unwrap();
    (dir, cwd)
}

/// Commits `offset` for `group` on partition 0 of `topic`, as a group that
/// consumed the topic before (another database, another deployment) would.
async fn commit_offset(kafka: &Kafka, group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let (brokers, g, topic) = (kafka.brokers.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(offset))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        common::committed(kafka, group, "shop.orders").await,
        Some(offset)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_database_for_a_group_kafka_knows_starts_where_start_from_says() {
    let topic = "shop.orders";
    let kafka = Kafka::new(&[(topic, 1)]);
    let orders: Vec<Record> = (1..=6)
        .map(|id| {
            let row = format!("{{\"id\":{id},\"total\":\"{id}.50\"}}");
            record(topic, Some(&format!("{{\"id\":{id}}}")), Some(&row))
        })
        .collect();
    kafka.produce(orders).await;

    for (option, expected, says) in [
        (
            None,
            vec![1, 2, 3, 4, 5, 6],
            "starting from the earliest offset",
        ),
        (
            Some("kafka_commit"),
            vec![5, 6],
            "starting from Kafka's committed offset; offsets 0 to 3 are not applied by this database",
        ),
        (
            Some("latest"),
            vec![],
            "starting from the end of the partition",
        ),
    ] {
        let label = option.unwrap_or("default");
        // The group committed offset 4 in Kafka: offsets 0..3 were applied
        // somewhere, but not in this new database.
        let group = format!("g-{label}");
        commit_offset(&kafka, &group, topic, 4).await;
        let db = TestDb::empty(&format!("start_{label}")).await;
        let (_, cwd) = recording_project(&format!("start-{label}"), &group, option);
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BROKERS", kafka.brokers.as_str()),
        ];
        ok(
            &pgchain_in(&cwd, &["migrate", "-c", "p/pipelines.yaml"], &env),
            "migrate",
        );
        let out = pgchain_in(
            &cwd,
            &["run", "-c", "p/pipelines.yaml", "--until-drained"],
            &env,
        );
        ok(&out, label);
        let log = String::from_utf8_lossy(&out.stderr);
        let line = format!(
            "shop.orders/0: the ledger has no position for group {group} (Kafka's committed offset: 4; log 0..6): {says}"
        );
        assert_eq!(log.matches(&line).count(), 1, "{label}: said once: {log}");
        let seen: Vec<i64> = db
            .client()
            .await
            .query("select id from t.seen order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(seen, expected, "{label}");
        if option.is_some() {
            continue;
        }
        // Once the ledger knows the partition, it decides: a second run applies nothing twice.
        let again = pgchain_in(
            &cwd,
            &["run", "-c", "p/pipelines.yaml", "--until-drained"],
            &env,
        );
        ok(&again, label);
        assert!(!String::from_utf8_lossy(&again.stderr).contains("has no position"));
        assert_eq!(
            db.i64("select count(*) from t.seen").await,
            expected.len() as i64,
            "{label}: applied once"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_migrated_with_the_runtime_in_its_project_is_adopted_without_loss() {
    let db = TestDb::empty("adopt").await;
    let cwd = temp_dir("adopt");
    let project = cwd.join("shop");
    let folder = project.join("sql/migrations");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        project.join("pipelines.yaml"),
        "kafka:\n  brokers: k:9092\npipelines:\n  orders:\n    topic: shop.orders\n    chain: [app.copy_order]\n",
    )
    .unwrap();
    // Yesterday's project: pgchain's runtime as V1/V3/V4/V5/V15 among the
    // user's own migrations (the files as earlier pgchain versions shipped them).
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_runtime");
    let legacy_files = files(&legacy);
    assert_eq!(legacy_files.len(), 5);
    for f in &legacy_files {
        std::fs::copy(legacy.join(f), folder.join(f)).unwrap();
    }
    std::fs::write(
        folder.join("V6__app_orders.sql"),
        "create schema app;\ncreate table app.orders (id bigint primary key, total numeric not null);\n\
         create procedure app.copy_order(inout ev jsonb) language plpgsql as $$\n\
         begin\n  insert into app.orders values ((ev->'after'->>'id')::bigint, (ev->'after'->>'total')::numeric)\n\
         \x20   on conflict (id) do update set total = excluded.total;\nend $$;\n",
    )
    .unwrap();
    // Migrated as earlier versions did: refinery over the whole folder.
    let mut client = db.client().await;
    let old = refinery::load_sql_migrations(&folder).unwrap();
    refinery::Runner::new(&old)
        .run_async(&mut client)
        .await
        .unwrap();
    // Work done under the old runtime: an applied event and a dead letter.
    let ev = r#"{"op":"c","key":{"id":1},"after":{"id":1,"total":"9.90"}}"#;
    client
        .batch_execute(&format!(
            "call pgchain.apply_event('pgchain', 'shop.orders', 0, 0, 'orders', array['app.copy_order'], '{ev}', null, null);
             call pgchain.dead_letter('pgchain', 'orders', 'shop.orders', 0, 1, null, '\\x01'::bytea, null,
                  '{{}}', '{{}}', '{{\"id\":2}}', 'dead', 'data', 'app.copy_order', '22P02', 'bad total', null, 3,
                  'shop.orders.dlq', null, null);"
        ))
        .await
        .unwrap();

    // Today: the runtime is built in and the project keeps only its own file.
    for f in &legacy_files {
        std::fs::remove_file(folder.join(f)).unwrap();
    }
    let env = [("DATABASE_URL", db.url.as_str())];
    let out = ok(
        &pgchain_in(&cwd, &["migrate", "-c", "shop/pipelines.yaml"], &env),
        "migrate",
    );
    assert!(
        out.contains("adopted pgchain's runtime from the project's migrations V1__pgchain_schema, V3__pgchain_batches, V4__pgchain_positions, V5__pgchain_normalize, V15__pgchain_dead_letters"),
        "{out}"
    );
    assert!(
        out.ends_with("shop/sql/migrations: applied 0 migration(s)\n"),
        "{out}"
    );

    // Nothing lost: the ledger, the dead letter, the user's rows and procedure.
    assert_eq!(db.applied("pgchain", "shop.orders", 0).await, Some(1));
    assert_eq!(
        db.strings("select concat_ws(' ', status, error_class, error_message, encode(msg_key, 'hex')) from pgchain.dead_letters")
            .await,
        ["dead data bad total 01"]
    );
    assert_eq!(
        db.strings("select total::text from app.orders").await,
        ["9.90"]
    );
    assert_eq!(
        db.strings("select version::text from refinery_schema_history order by version")
            .await,
        ["6"],
        "only the project's own migration stays in refinery's history"
    );
    // The built-in runtime runs the next event through the user's step.
    let ev2 = r#"{"op":"c","key":{"id":3},"after":{"id":3,"total":"1.25"}}"#;
    let status: String = client
        .query_one(
            &format!("call pgchain.apply_event('pgchain', 'shop.orders', 0, 2, 'orders', array['app.copy_order'], '{ev2}', null, null)"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "applied");
    assert_eq!(db.applied("pgchain", "shop.orders", 0).await, Some(2));
    // The refinery CLI's view of the project's folder alone: nothing missing.
    let own = refinery::load_sql_migrations(&folder).unwrap();
    let report = refinery::Runner::new(&own)
        .set_abort_missing(true)
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .unwrap();
    assert!(report.applied_migrations().is_empty());
    // And the next migrate has nothing to do.
    let again = ok(
        &pgchain_in(&cwd, &["migrate", "-c", "shop/pipelines.yaml"], &env),
        "again",
    );
    assert_eq!(
        again,
        "pgchain runtime: up to date\nshop/sql/migrations: applied 0 migration(s)\n"
    );
}
