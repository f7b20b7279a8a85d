//! `pgchain render` as a user runs it: versions, --check, and the folder
//! applying with refinery on a fresh database and on one that has older
//! versions.

mod common;

use common::TestDb;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pgchain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pgchain")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A project folder with the shipped templates and migrations.
fn project(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgchain-render-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["sql/templates", "sql/migrations"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for f in std::fs::read_dir(root.join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(sub).join(f.file_name())).unwrap();
        }
    }
    dir
}

fn migrations(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("sql/migrations"))
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort_by_key(|n| n[1..n.find("__").unwrap()].parse::<u32>().unwrap());
    names
}

const YAML: &str = r#"kafka:
  brokers: k
pipelines:
  sales:
    topic: sales.public.customer
    chain: [l0.copy_customer]
procedures:
  l0.copy_customer:
    template: l0_upsert
    vars:
      table: l0.customer
      columns: {id: bigint, name: text}
      key: [id]
  l0.copy_order:
    template: l0_upsert
    vars:
      table: l0.orders
      columns: {order_id: bigint, amount: "numeric(12,2)"}
      key: [order_id]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn render_writes_a_version_only_when_the_output_changes() {
    let dir = project("versions");
    std::fs::write(dir.join("pipelines.yaml"), YAML).unwrap();
    let next = migrations(&dir)
        .iter()
        .map(|n| n[1..n.find("__").unwrap()].parse::<usize>().unwrap())
        .max()
        .unwrap()
        + 1;

    let out = pgchain(&dir, &["render"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        format!(
            "wrote sql/migrations/V{next}__l0_copy_customer.sql (l0.copy_customer)\nwrote sql/migrations/V{}__l0_copy_order.sql (l0.copy_order)\n",
            next + 1
        )
    );
    let first =
        std::fs::read_to_string(dir.join(format!("sql/migrations/V{next}__l0_copy_customer.sql")))
            .unwrap();
    assert!(first.starts_with("-- pgchain render: l0.copy_customer (template l0_upsert)\n"));

    // Deterministic: a second run writes nothing, and --check agrees.
    assert_eq!(
        stdout(&pgchain(&dir, &["render"])),
        "2 procedure(s) up to date; nothing written\n"
    );
    let check = pgchain(&dir, &["render", "--check"]);
    assert_eq!(
        (check.status.code(), stdout(&check)),
        (Some(0), "2 procedure(s) up to date\n".to_string())
    );

    // A fresh database takes the whole folder.
    let db = TestDb::new("render").await;
    let fresh = TestDb::new("render_fresh").await;
    let url = fresh.url.clone();
    let out = pgchain(&dir, &["migrate", "--database-url", &url]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        format!(
            "pgchain runtime: up to date\nsql/migrations: applied 2 migration(s): V{next}__l0_copy_customer, V{}__l0_copy_order\n",
            next + 1
        )
    );
    drop(db);

    // A changed variable: --check names it, render adds exactly one version.
    std::fs::write(
        dir.join("pipelines.yaml"),
        YAML.replace(
            "{id: bigint, name: text}",
            "{id: bigint, name: text, email: text}",
        ),
    )
    .unwrap();
    let check = pgchain(&dir, &["render", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        stdout(&check),
        format!(
            "l0.copy_customer: the template `l0_upsert` or its variables changed since sql/migrations/V{next}__l0_copy_customer.sql; run `pgchain render`\n"
        )
    );
    let before = migrations(&dir);
    assert_eq!(
        stdout(&pgchain(&dir, &["render"])),
        format!(
            "wrote sql/migrations/V{}__l0_copy_customer.sql (l0.copy_customer)\n",
            next + 2
        )
    );
    assert_eq!(migrations(&dir).len(), before.len() + 1);
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("sql/migrations/V{next}__l0_copy_customer.sql")))
            .unwrap(),
        first,
        "an existing file is never rewritten"
    );

    // The database with the older versions takes just the new one.
    let out = pgchain(&dir, &["migrate", "--database-url", &url]);
    assert_eq!(
        stdout(&out),
        format!(
            "pgchain runtime: up to date\nsql/migrations: applied 1 migration(s): V{}__l0_copy_customer\n",
            next + 2
        )
    );
    let cols = fresh.strings("select column_name::text from information_schema.columns where table_schema = 'l0' and table_name = 'customer' and column_name not like '\\_%' order by ordinal_position").await;
    assert_eq!(cols, ["id", "name", "email"]);
}

#[test]
fn render_errors_name_the_yaml_and_the_template_line() {
    let dir = project("errors");
    std::fs::write(
        dir.join("pipelines.yaml"),
        "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: t\n    chain: [l0.a]\nprocedures:\n  l0.a:\n    template: l0_upsert\n    vars:\n      table: l0.a\n      key: [id]\n  l0.b:\n    template: nope\n",
    )
    .unwrap();
    let shipped = migrations(&dir).len();
    let out = pgchain(&dir, &["render"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0]
            .starts_with("pipelines.yaml:8: procedure `l0.a`: built-in template l0_upsert.sql.j2:"),
        "{text}"
    );
    assert!(
        lines[0].ends_with("undefined value: `columns` is not set in the procedure's vars"),
        "the variable is named: {text}"
    );
    assert!(
        lines[1].starts_with("pipelines.yaml:13: procedure `l0.b`: template `nope` is neither in sql/templates nor built in (built in: consolidate, "),
        "{text}"
    );
    assert_eq!(
        migrations(&dir).len(),
        shipped,
        "nothing written when anything fails"
    );
}

/// What became of values from pipelines.yaml on their way into SQL.
enum Outcome {
    /// `pgchain render` refused them: its output.
    Refused(String),
    /// Rendered, and applied by `pgchain migrate` beside a table `y` that
    /// survived it.
    Migrated(TestDb),
}

/// The pipelines.yaml of a project with one procedure, `l0.p`.
fn one_procedure(template: &str, vars: &[&str]) -> String {
    let vars: String = vars.iter().map(|v| format!("      {v}\n")).collect();
    format!(
        "kafka:\n  brokers: k\npipelines:\n  p:\n    topic: t\n    chain: [l0.p]\nprocedures:\n  l0.p:\n    template: {template}\n    vars:\n{vars}"
    )
}

/// Renders `l0.p` from `template` with `vars` in a project of its own. If it
/// renders, `pgchain migrate` applies it to a fresh database holding a table
/// `y`, which must survive.
async fn attempt(label: &str, template: &str, vars: &[&str]) -> Outcome {
    let dir = std::env::temp_dir().join(format!(
        "pgchain-render-inject-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sql/migrations")).unwrap();
    std::fs::write(dir.join("pipelines.yaml"), one_procedure(template, vars)).unwrap();
    let out = pgchain(&dir, &["render"]);
    if out.status.code() == Some(1) {
        let _ = std::fs::remove_dir_all(&dir);
        return Outcome::Refused(stdout(&out));
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = TestDb::empty(label).await;
    db.exec("create table public.y (id int); insert into public.y values (1);")
        .await;
    let out = pgchain(&dir, &["migrate", "--database-url", &db.url]);
    let rendered: String = std::fs::read_dir(dir.join("sql/migrations"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "migrate: {}\n{rendered}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.i64("select (to_regclass('public.y') is not null)::int::int8")
            .await,
        1,
        "table y survived:\n{rendered}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Outcome::Migrated(db)
}

/// Asserts `pgchain render` refused `vars`, naming the line of `key` in
/// pipelines.yaml, the template and its line, and the variable as `shown`.
async fn refused(label: &str, template: &str, vars: &[&str], key: &str, shown: &str) -> String {
    let text = match attempt(label, template, vars).await {
        Outcome::Refused(text) => text,
        Outcome::Migrated(_) => panic!("{label}: rendered; expected a render error"),
    };
    let yaml = one_procedure(template, vars);
    let line = yaml
        .lines()
        .position(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap()
        + 1;
    let prefix =
        format!("pipelines.yaml:{line}: procedure `l0.p`: built-in template {template}.sql.j2:");
    assert!(text.starts_with(&prefix), "{label}: {prefix}…, got {text}");
    let template_line = &text[prefix.len()..];
    assert!(
        template_line.starts_with(|c: char| c.is_ascii_digit()),
        "{label}: the template's line: {text}"
    );
    assert!(
        text.trim_end()
            .ends_with(&format!("(from `{shown}` in the procedure's vars)")),
        "{label}: the variable: {text}"
    );
    assert_eq!(text.lines().count(), 1, "{label}: one line: {text}");
    text
}

const SINK: [&str; 2] = ["columns: {id: bigint, v: text}", "key: [id]"];

#[tokio::test(flavor = "multi_thread")]
async fn a_line_break_in_a_table_name_is_a_render_error() {
    for (label, template) in [("nl_sink", "sink_upsert"), ("nl_l0", "l0_upsert")] {
        let text = refused(
            label,
            template,
            &[r#"table: "l0.x\ndrop table y; --""#, SINK[0], SINK[1]],
            "table",
            "table",
        )
        .await;
        assert!(
            text.contains(
                r#"`table | qualified`: "l0.x\ndrop table y; --" cannot be a qualified name"#
            ),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quotes_in_a_table_name_stay_inside_it_and_migrate_keeps_y() {
    for (label, table, relation) in [
        (
            "dq",
            r#"'l0.x"; drop table y; --'"#,
            r#"l0."x""; drop table y; --""#,
        ),
        (
            "sq",
            r#""l0.x'; drop table y; --""#,
            r#"l0."x'; drop table y; --""#,
        ),
    ] {
        let Outcome::Migrated(db) = attempt(
            label,
            "sink_upsert",
            &[&format!("table: {table}"), SINK[0], SINK[1]],
        )
        .await
        else {
            panic!("{label}: refused");
        };
        let client = db.client().await;
        let exists: bool = client
            .query_one("select to_regclass($1) is not null", &[&relation])
            .await
            .unwrap()
            .get(0);
        assert!(exists, "{label}: the table is named as written");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identifier_over_63_bytes_is_a_render_error() {
    let long = "a".repeat(64);
    let text = refused(
        "long_table",
        "sink_upsert",
        &[&format!("table: l0.{long}"), SINK[0], SINK[1]],
        "table",
        "table",
    )
    .await;
    assert!(
        text.contains("it is 64 bytes and PostgreSQL keeps only the first 63 of a name"),
        "{text}"
    );
    let column = format!("{long}\"");
    refused(
        "long_column",
        "l0_upsert",
        &[
            "table: l0.x",
            &format!("columns: {{id: bigint, '{column}': text}}"),
            "key: [id]",
        ],
        "columns",
        &format!("columns.{column:?}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_guard_is_ts_ms_position_or_none() {
    for (label, template, guard) in [
        ("guard_semi_l0", "l0_upsert", r#""none; drop table y; --""#),
        ("guard_nl_l0", "l0_upsert", r#""ts_ms\ndrop table y; --""#),
        (
            "guard_semi_sink",
            "sink_upsert",
            r#""none; drop table y; --""#,
        ),
        (
            "guard_nl_sink",
            "sink_upsert",
            r#""ts_ms\ndrop table y; --""#,
        ),
    ] {
        let text = refused(
            label,
            template,
            &[
                "table: l0.x",
                SINK[0],
                SINK[1],
                &format!("stale_guard: {guard}"),
            ],
            "stale_guard",
            "stale_guard",
        )
        .await;
        assert!(
            text.contains("is not ts_ms, position or none"),
            "{label}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_in_a_comment_cannot_break_its_line() {
    refused(
        "comment_l1",
        "l1_cleanse",
        &[
            "target: l0.member",
            r#"system: "crm\ndrop table y; --""#,
            "key: [ID]",
        ],
        "system",
        "system",
    )
    .await;
    refused(
        "comment_consolidate",
        "consolidate",
        &[
            "target: l0.member",
            "key: {member_id: bigint}",
            "source: consent",
            "base: false",
            r#"awaits: "member\ndrop table y; --""#,
            "columns: {sms_ok: boolean}",
        ],
        "awaits",
        "awaits",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dollar_quote_in_an_event_field_stays_in_its_literal() {
    let field = "a$$; drop table y; --";
    let Outcome::Migrated(db) = attempt(
        "dollar",
        "sink_upsert",
        &[
            "table: l0.x",
            SINK[0],
            SINK[1],
            &format!("fields: {{id: '{field}'}}"),
        ],
    )
    .await
    else {
        panic!("refused");
    };
    let ev = serde_json::json!({"op": "c", "key": {field: 7}, "after": {field: 7, "v": "x"},
        "source": {"ts_ms": 1, "position": "1"}});
    db.client()
        .await
        .execute("call l0.p($1)", &[&tokio_postgres::types::Json(ev)])
        .await
        .unwrap();
    assert_eq!(db.strings("select id::text from l0.x").await, ["7"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_type_is_a_type_and_nothing_more() {
    refused(
        "type",
        "l0_upsert",
        &["table: l0.x", "columns: {id: bigint or true}", "key: [id]"],
        "columns",
        "columns.id",
    )
    .await;
}
