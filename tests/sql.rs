//! SQL behaviour tests of pgchain's runtime procedures and normalisers:
//! every `tests/sql/<procedure>/<behaviour>.sql` runs in a transaction that
//! is rolled back, on a database holding only pgchain's runtime. A file
//! fails by raising (its `assert`s say what was expected and found).

mod common;

use common::{TestDb, temp_dir};
use std::path::{Path, PathBuf};

fn behaviour_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "sql") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runtime_behaviour_holds() {
    let db = TestDb::empty("sql_behaviour").await;
    let empty_project = temp_dir("sql-behaviour");
    pgchain::db::migrate(&db.url, &empty_project)
        .await
        .expect("runtime");
    let client = db.client().await;
    let files = behaviour_files();
    // A procedure folder per runtime procedure tested; an empty tree must not pass.
    assert!(files.len() >= 40, "only {} behaviour files", files.len());
    let mut failed = Vec::new();
    for file in &files {
        let sql = std::fs::read_to_string(file).unwrap();
        let name = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .display()
            .to_string();
        // Asserts must be live whatever the server's setting.
        let batch = format!("begin;\nset local plpgsql.check_asserts = on;\n{sql}\n;rollback;");
        if let Err(e) = client.batch_execute(&batch).await {
            failed.push(format!("{name}: {}", pgchain::chain::describe(&e)));
            client.batch_execute("rollback").await.unwrap();
        }
    }
    // Nothing a behaviour did outlives it.
    assert_eq!(db.i64("select count(*) from pgchain.offsets").await, 0);
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
