//! pgchain's own runtime in the database: the ledger, the chain runner, dead
//! letters, positions and normalisers, from `sql/pgchain/` (built into the
//! binary).
//!
//! Every runtime file is idempotent (`create … if not exists`, `create or
//! replace`, `drop … if exists` of an old signature) and is applied, in file
//! order, whenever its text differs from what `pgchain.runtime_history` says
//! was applied. So upgrading pgchain and running `pgchain migrate` brings the
//! runtime up to date, and a project's own migrations never hold pgchain's.

use crate::embedded::RUNTIME;
use anyhow::Context;

/// The migrations under which earlier pgchain versions shipped the runtime
/// inside the project's own folder (`V{n}__{name}.sql`).
pub const LEGACY: &[(i32, &str)] = &[
    (1, "pgchain_schema"),
    (3, "pgchain_batches"),
    (4, "pgchain_positions"),
    (5, "pgchain_normalize"),
    (15, "pgchain_dead_letters"),
];

/// What one `apply` did.
#[derive(Debug, Default)]
pub struct RuntimeReport {
    /// Runtime files applied now (new or changed).
    pub applied: Vec<String>,
    /// Legacy migrations (`V1__pgchain_schema`, …) taken out of the project's
    /// refinery history, the runtime now being pgchain's own.
    pub adopted: Vec<String>,
}

/// Brings pgchain's runtime up to date in one transaction, serialised
/// against a concurrent `migrate`. `project_versions` are the versions of
/// the project's own migration files: a legacy runtime migration is adopted
/// (removed from refinery's history) only when the project no longer has a
/// file of that version.
pub async fn apply(
    client: &mut tokio_postgres::Client,
    project_versions: &[i32],
) -> anyhow::Result<RuntimeReport> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "select pg_advisory_xact_lock(hashtext('pgchain.runtime'));
         set local client_min_messages = warning;
         create schema if not exists pgchain;
         create table if not exists pgchain.runtime_history (
           file            text        primary key,
           checksum        text        not null,
           pgchain_version text        not null,
           applied_at      timestamptz not null default now()
         );",
    )
    .await
    .context("cannot create pgchain.runtime_history")?;
    let mut report = RuntimeReport::default();
    for (path, sql) in RUNTIME {
        let file = path.rsplit('/').next().unwrap_or(path);
        let current: bool = tx
            .query_one(
                "select exists (select 1 from pgchain.runtime_history
                                 where file = $1 and checksum = md5($2))",
                &[&file, sql],
            )
            .await?
            .get(0);
        if current {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            anyhow::anyhow!("pgchain runtime {path}: {}", crate::chain::describe(&e))
        })?;
        tx.execute(
            "insert into pgchain.runtime_history (file, checksum, pgchain_version)
             values ($1, md5($2), $3)
             on conflict (file) do update
               set checksum = excluded.checksum, pgchain_version = excluded.pgchain_version,
                   applied_at = now()",
            &[&file, sql, &env!("CARGO_PKG_VERSION")],
        )
        .await?;
        report.applied.push(file.to_string());
    }
    report.adopted = adopt_legacy(&tx, project_versions).await?;
    tx.commit().await?;
    Ok(report)
}

/// Removes the legacy runtime migrations from refinery's history of the
/// project (the runtime just applied replaces them; their tables and rows
/// stay as they are) and records them in `pgchain.runtime_history`.
async fn adopt_legacy(
    tx: &tokio_postgres::Transaction<'_>,
    project_versions: &[i32],
) -> anyhow::Result<Vec<String>> {
    let history: Option<String> = tx
        .query_one("select to_regclass('refinery_schema_history')::text", &[])
        .await?
        .get(0);
    if history.is_none() {
        return Ok(Vec::new());
    }
    let (versions, names): (Vec<i32>, Vec<&str>) = LEGACY
        .iter()
        .filter(|(v, _)| !project_versions.contains(v))
        .map(|(v, n)| (*v, *n))
        .unzip();
    let rows = tx
        .query(
            "delete from refinery_schema_history h
              using unnest($1::int[], $2::text[]) as l(version, name)
              where h.version = l.version and h.name = l.name
             returning h.version, h.name, h.checksum",
            &[&versions, &names],
        )
        .await?;
    let mut adopted = Vec::new();
    for r in &rows {
        let (version, name, checksum): (i32, String, String) = (r.get(0), r.get(1), r.get(2));
        let file = format!("V{version}__{name}");
        tx.execute(
            "insert into pgchain.runtime_history (file, checksum, pgchain_version)
             values ($1, $2, 'adopted') on conflict (file) do nothing",
            &[&format!("legacy/{file}"), &checksum],
        )
        .await?;
        adopted.push(file);
    }
    adopted.sort_by_key(|f| {
        f[1..]
            .split("__")
            .next()
            .and_then(|v| v.parse::<i32>().ok())
    });
    Ok(adopted)
}
