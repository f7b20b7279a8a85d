//! PostgreSQL: the connection pool, migrations, and the checks that the
//! database can run the configured chains.

use crate::config::Config;
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::Path;
use tokio_postgres::NoTls;

/// A pool of `size` connections to `url`. Sessions are named in
/// `pg_stat_activity` as `pgchain` (`pgchain <group>` with [`pool_for`]),
/// unless the URL sets `application_name` itself.
pub fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    pool_named(url, size, "pgchain")
}

/// [`pool`] for a consumer group's dispatcher: sessions show as `pgchain <group>`.
pub fn pool_for(url: &str, size: usize, group: &str) -> anyhow::Result<Pool> {
    pool_named(url, size, &format!("pgchain {group}"))
}

fn pool_named(url: &str, size: usize, name: &str) -> anyhow::Result<Pool> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("invalid PostgreSQL URL {}", redact_url(url)))?;
    if pg.get_application_name().is_none() {
        pg.application_name(name);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        // A database that does not answer is a transient error, not a hang.
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .wait_timeout(Some(std::time::Duration::from_secs(60)))
        .recycle_timeout(Some(std::time::Duration::from_secs(10)))
        .build()?)
}

/// One connection outside the pool (migrations, admin work).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    Ok(client)
}

/// The URL (or key=value string) with its password replaced, fit for logs
/// and errors. The password is what lies between the user's `:` and the last
/// `@` of the authority, so `/`, `?` or `@` inside it do not defeat this.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(scheme_end) => {
            let (head, rest) = url.split_at(scheme_end + 3);
            // An `@` inside a query (`?password=p@ss`) is not the
            // authority's: look for it before the query starts.
            let query = rest.find("?password=").or_else(|| rest.find("&password="));
            let authority = query.map_or(rest, |q| &rest[..q]);
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    match userinfo.split_once(':') {
                        Some((user, _)) => format!("{head}{user}:***{}", &rest[at..]),
                        None => url.to_string(),
                    }
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    // `password=…` in a query string or a key=value connection string.
    let mut from = 0;
    while let Some(i) = out[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// What `pgchain migrate` did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// pgchain's own runtime files applied now, and legacy migrations adopted.
    pub runtime: crate::store::runtime::RuntimeReport,
    /// The project's own migrations applied now (`V6__l0_copy_customer`).
    pub applied: Vec<String>,
}

/// Applies pgchain's runtime, then the project's refinery migrations in
/// `dir`. Aborts when an applied migration's file changed or disappeared.
pub async fn migrate(url: &str, dir: &Path) -> anyhow::Result<Migrated> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder: a project keeps its migrations in sql/migrations beside its pipelines.yaml",
            dir.display()
        );
    }
    let migrations = refinery::load_sql_migrations(dir)
        .with_context(|| format!("cannot read migrations in {}", dir.display()))?;
    for m in &migrations {
        if crate::store::runtime::LEGACY
            .iter()
            .any(|(v, n)| *v == m.version() && *n == m.name())
        {
            tracing::warn!(
                "{}/{m}.sql is pgchain's own runtime of an earlier version, now built into pgchain: delete the file",
                dir.display()
            );
        }
    }
    let versions: Vec<i32> = migrations.iter().map(|m| m.version()).collect();
    let mut client = connect(url).await?;
    let runtime = crate::store::runtime::apply(&mut client, &versions).await?;
    let report = refinery::Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(&mut client)
        .await
        .with_context(|| format!("migration of {} failed", dir.display()))?;
    Ok(Migrated {
        runtime,
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect(),
    })
}

/// Checks that every step exists as a procedure taking one `inout jsonb`, and
/// that pgchain's own schema is migrated. Returns every problem found.
pub async fn check(
    config: &Config,
    client: &tokio_postgres::Client,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let dead_letters = client
        .query_opt("select to_regclass('pgchain.dead_letters')::text", &[])
        .await?
        .and_then(|r| r.get::<_, Option<String>>(0));
    let runner = client
        .query_opt("select to_regprocedure('pgchain.apply_event(text,text,integer,bigint,text,text[],jsonb,text,float8[])')::text", &[])
        .await?
        .and_then(|r| r.get::<_, Option<String>>(0));
    let batch_runner = client
        .query_opt(
            "select to_regprocedure('pgchain.apply_batch(text,text,integer,bigint[],text[],text[],jsonb[],text[],float8[],integer[])')::text",
            &[],
        )
        .await?
        .and_then(|r| r.get::<_, Option<String>>(0));
    if runner.is_none() || batch_runner.is_none() || dead_letters.is_none() {
        problems
            .push("the database lacks pgchain's own procedures: run `pgchain migrate`".to_string());
    }
    let steps: Vec<String> = config
        .pipelines
        .values()
        .flat_map(|p| p.chain.iter().cloned())
        .collect();
    let rows = client
        .query(
            "select n.nspname || '.' || p.proname,
                    p.prokind = 'p' and p.pronargs = 1 and p.proargtypes[0] = 'jsonb'::regtype
                      and p.proargmodes = array['b']::\"char\"[],
                    format('%s %s(%s)', case p.prokind when 'p' then 'procedure' else 'function' end,
                           p.oid::regproc, pg_get_function_arguments(p.oid))
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname || '.' || p.proname = any($1)",
            &[&steps],
        )
        .await?;
    for (name, p) in &config.pipelines {
        for (i, step) in p.chain.iter().enumerate() {
            let found: Vec<_> = rows
                .iter()
                .filter(|r| r.get::<_, String>(0) == *step)
                .collect();
            let at = config.at(&["pipelines", name, "chain", &i.to_string()]);
            if found.is_empty() {
                problems.push(format!(
                    "{at}pipeline `{name}`: step `{step}` does not exist in the database"
                ));
            } else if !found.iter().any(|r| r.get::<_, bool>(1)) {
                let seen: Vec<String> = found.iter().map(|r| r.get(2)).collect();
                problems.push(format!(
                    "{at}pipeline `{name}`: step `{step}` must be a procedure taking one `inout ev jsonb`; found {}",
                    seen.join(", ")
                ));
            }
        }
    }
    Ok(problems)
}

/// The same server URL with another database name.
pub fn with_database(url: &str, database: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let (authority, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
        format!("{}{authority}/{database}{query}", &url[..scheme_end + 3])
    } else {
        format!("{url} dbname={database}")
    }
}

/// Drops and creates `database` on the server of `url`; returns its URL.
pub async fn recreate_database(url: &str, database: &str) -> anyhow::Result<String> {
    let admin = connect(url).await?;
    let ident = database.replace('"', "\"\"");
    admin
        .batch_execute(&format!("drop database if exists \"{ident}\" with (force)"))
        .await?;
    admin
        .batch_execute(&format!("create database \"{ident}\""))
        .await?;
    Ok(with_database(url, database))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("postgres://a:p@ss@db/x?sslmode=require"),
            "postgres://a:***@db/x?sslmode=require"
        );
        assert_eq!(redact_url("host=db user=app"), "host=db user=app");
        assert_eq!(
            redact_url("postgres://app@db:5432/x?sslmode=require&password=p@ss/w?rd"),
            "postgres://app@db:5432/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://db/x?password=a@b"),
            "postgres://db/x?password=***"
        );
        assert_eq!(
            redact_url("postgres://app:pa/ss?w@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=s3cret&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("host=db password=s3cret user=app"),
            "host=db password=*** user=app"
        );
    }
}
