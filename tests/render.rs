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
