//! `pgchain identity …`: a data steward's questions to an identity graph,
//! answered by the graph's own SQL functions (`explain`, `explain_cluster`,
//! which the identity_link template renders). The graph is the `schema` of
//! an identity_link procedure of pipelines.yaml.

mod estimate;

pub use estimate::{Estimate, Level, estimate};

use crate::config::Config;
use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Json;

/// A record of the union, written `system:source_key` on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRef {
    pub system: String,
    pub source_key: String,
}

impl std::str::FromStr for RecordRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((system, key)) if !system.is_empty() && !key.is_empty() => Ok(RecordRef {
                system: system.to_string(),
                source_key: key.to_string(),
            }),
            _ => Err(format!(
                "`{s}`: a record is written system:source_key (e.g. crm:7)"
            )),
        }
    }
}

/// The identity_link procedure `procedure`, or the only one the config
/// has: its name and spec.
pub fn graph<'c>(
    config: &'c Config,
    procedure: Option<&str>,
) -> anyhow::Result<(&'c String, &'c crate::config::ProcedureSpec)> {
    let links: Vec<(&String, &crate::config::ProcedureSpec)> = config
        .procedures
        .iter()
        .filter(|(name, p)| p.template == "identity_link" && procedure.is_none_or(|w| w == *name))
        .collect();
    match (links.as_slice(), procedure) {
        ([one], _) => Ok(*one),
        ([], Some(p)) => bail!("no identity_link procedure `{p}` in the config"),
        ([], None) => bail!("the config has no identity_link procedure"),
        (many, _) => bail!(
            "the config has several identity_link procedures ({}); name one with --procedure",
            many.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The graph schema of the identity_link procedure `procedure`, or of the
/// only one the config has.
pub fn graph_schema(config: &Config, procedure: Option<&str>) -> anyhow::Result<String> {
    let (name, spec) = graph(config, procedure)?;
    match spec.vars.get("schema") {
        Some(serde_yaml::Value::String(s)) => Ok(s.clone()),
        _ => bail!("procedure `{name}`: vars.schema is not a schema name"),
    }
}

/// One hop of `explain`: why two records are one entity.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub hop: i32,
    pub from: String,
    pub rule: String,
    pub matched: Value,
    pub to: String,
    /// Every rule the hop's two records match on.
    pub rules: Vec<String>,
    pub linked_at: Option<String>,
}

/// One shared value of `explain_cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub cluster_id: i64,
    pub rule: String,
    pub matched: Value,
    /// links, held or generic.
    pub state: String,
    pub records: Value,
    /// Bearers of the value in other clusters.
    pub elsewhere: i64,
    pub linked_at: Option<String>,
}

/// The database's own words and SQLSTATE, for a refused steward action.
fn said(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

fn schema_ident(schema: &str) -> anyhow::Result<String> {
    crate::render::quote_ident(schema).map_err(|e| anyhow::anyhow!("graph schema: {e}"))
}

/// The chain of links between two records (empty: not one entity).
pub async fn explain(
    client: &tokio_postgres::Client,
    schema: &str,
    a: &RecordRef,
    b: &RecordRef,
) -> anyhow::Result<Vec<Hop>> {
    let sql = format!(
        "select hop, from_system || ':' || from_key, rule, matched, to_system || ':' || to_key, rules,
                to_char(linked_at, 'YYYY-MM-DD HH24:MI:SSOF')
           from {}.explain($1, $2, $3, $4) order by hop",
        schema_ident(schema)?
    );
    let rows = client
        .query(&sql, &[&a.system, &a.source_key, &b.system, &b.source_key])
        .await
        .with_context(|| format!("{schema}.explain; is the identity_link procedure migrated?"))?;
    Ok(rows
        .iter()
        .map(|r| Hop {
            hop: r.get(0),
            from: r.get(1),
            rule: r.get(2),
            matched: r.get::<_, Json<Value>>(3).0,
            to: r.get(4),
            rules: r.get(5),
            linked_at: r.get(6),
        })
        .collect())
}

/// Every link of the record's cluster (empty: the graph has no such record).
pub async fn explain_cluster(
    client: &tokio_postgres::Client,
    schema: &str,
    a: &RecordRef,
) -> anyhow::Result<Vec<Link>> {
    let sql = format!(
        "select cluster_id, rule, matched, state, records, elsewhere, to_char(linked_at, 'YYYY-MM-DD HH24:MI:SSOF')
           from {}.explain_cluster($1, $2)",
        schema_ident(schema)?
    );
    let rows = client
        .query(&sql, &[&a.system, &a.source_key])
        .await
        .with_context(|| {
            format!("{schema}.explain_cluster; is the identity_link procedure migrated?")
        })?;
    Ok(rows
        .iter()
        .map(|r| Link {
            cluster_id: r.get(0),
            rule: r.get(1),
            matched: r.get::<_, Json<Value>>(2).0,
            state: r.get(3),
            records: r.get::<_, Json<Value>>(4).0,
            elsewhere: r.get(5),
            linked_at: r.get(6),
        })
        .collect())
}

/// A steward's action: one of the graph's SQL functions (`must_link`,
/// `cannot_link`, `revoke_override`, `release_value`, `release_held`), which changes the
/// graph, re-links the records involved, recomputes their golden records
/// and publishes them. Returns its answer (`clusters`, `merged`, `split`;
/// `override` for an override). A refusal carries the database's words and
/// SQLSTATE.
pub async fn steward(
    client: &tokio_postgres::Client,
    schema: &str,
    action: Action<'_>,
) -> anyhow::Result<Value> {
    let (function, params): (&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) = match &action
    {
        Action::MustLink { a, b, by, why } => (
            "must_link($1, $2, $3, $4, $5, $6)",
            vec![&a.system, &a.source_key, &b.system, &b.source_key, by, why],
        ),
        Action::CannotLink { a, b, by, why } => (
            "cannot_link($1, $2, $3, $4, $5, $6)",
            vec![&a.system, &a.source_key, &b.system, &b.source_key, by, why],
        ),
        Action::Revoke { id, by } => ("revoke_override($1, $2)", vec![id, by]),
        Action::ReleaseValue {
            rule,
            value,
            by,
            why,
        } => ("release_value($1, $2, $3, $4)", vec![rule, value, by, why]),
        Action::ReleaseHeld {
            record,
            rule,
            value,
            by,
        } => (
            "release_held($1, $2, $3, $4, $5)",
            vec![&record.system, &record.source_key, rule, value, by],
        ),
    };
    let sql = format!("select {}.{function}", schema_ident(schema)?);
    let name = function.split('(').next().unwrap_or(function);
    let row = client
        .query_one(&sql, &params)
        .await
        .map_err(|e| anyhow::anyhow!("{schema}.{name}: {}", said(&e)))?;
    Ok(row.get::<_, Json<Value>>(0).0)
}

/// Re-links every record of the graph `schema` (`relink_all`: rebuild,
/// unify_all, publish_all in one transaction; running link steps wait for
/// it; run again after a deadlock with one). Returns how many records and
/// clusters the graph has after.
pub async fn relink_all(
    client: &tokio_postgres::Client,
    schema: &str,
) -> anyhow::Result<(i64, i64)> {
    let s = schema_ident(schema)?;
    // The rebuild locks the graph's tables; a link step that took one of
    // them first can meet it in a deadlock (or a serialization failure).
    // PostgreSQL then rolls the whole re-link back, and it runs again.
    let mut attempt = 0;
    let mut backoff = crate::chain::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    loop {
        match client
            .batch_execute(&format!("call {s}.relink_all()"))
            .await
        {
            Ok(()) => break,
            Err(e)
                if attempt < 20
                    && e.code()
                        .is_some_and(|c| crate::chain::is_conflict(c.code())) =>
            {
                attempt += 1;
                tracing::warn!(
                    "{schema}.relink_all: {}; running it again ({attempt})",
                    said(&e)
                );
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => bail!("{schema}.relink_all: {}", said(&e)),
        }
    }
    let row = client
        .query_one(
            &format!("select count(*), count(distinct cluster_id) from {s}.records"),
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{schema}: {}", said(&e)))?;
    Ok((row.get(0), row.get(1)))
}

/// What a steward does to a graph.
pub enum Action<'a> {
    /// Link two records by hand.
    MustLink {
        a: &'a RecordRef,
        b: &'a RecordRef,
        by: &'a str,
        why: &'a str,
    },
    /// Keep two records apart, whatever they share.
    CannotLink {
        a: &'a RecordRef,
        b: &'a RecordRef,
        by: &'a str,
        why: &'a str,
    },
    /// End an override.
    Revoke { id: i64, by: &'a str },
    /// Let a generic value link again, for good.
    ReleaseValue {
        rule: &'a str,
        value: &'a str,
        by: &'a str,
        why: &'a str,
    },
    /// Let a link max_cluster_size held link.
    ReleaseHeld {
        record: &'a RecordRef,
        rule: &'a str,
        value: &'a str,
        by: &'a str,
    },
}

/// Matched values as `column=value, …`, in the rule's column order as stored.
fn values(matched: &Value) -> String {
    match matched {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub fn hops_table(hops: &[Hop]) -> String {
    let mut out = format!(
        "{:>3}  {:<24}  {:<12}  {:<40}  {:<24}  {:<20}  {}\n",
        "HOP", "FROM", "RULE", "MATCHED", "TO", "ALSO", "LINKED AT"
    );
    for h in hops {
        let also: Vec<&str> = h
            .rules
            .iter()
            .map(String::as_str)
            .filter(|r| *r != h.rule)
            .collect();
        out.push_str(&format!(
            "{:>3}  {:<24}  {:<12}  {:<40}  {:<24}  {:<20}  {}\n",
            h.hop,
            h.from,
            h.rule,
            values(&h.matched),
            h.to,
            if also.is_empty() {
                "-".to_string()
            } else {
                also.join(",")
            },
            h.linked_at.as_deref().unwrap_or("-")
        ));
    }
    out
}

pub fn links_table(links: &[Link]) -> String {
    let mut out = format!(
        "{:<12}  {:<8}  {:<40}  {:<40}  {:>9}  {}\n",
        "RULE", "STATE", "MATCHED", "RECORDS", "ELSEWHERE", "LINKED AT"
    );
    for l in links {
        let records = l
            .records
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        format!(
                            "{}:{}",
                            r["system"].as_str().unwrap_or("?"),
                            r["source_key"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<12}  {:<8}  {:<40}  {:<40}  {:>9}  {}\n",
            l.rule,
            l.state,
            values(&l.matched),
            records,
            l.elsewhere,
            l.linked_at.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_system_colon_key() {
        let r: RecordRef = "crm:7:a".parse().unwrap();
        assert_eq!((r.system.as_str(), r.source_key.as_str()), ("crm", "7:a"));
        assert!("crm".parse::<RecordRef>().is_err());
        assert!(":7".parse::<RecordRef>().is_err());
    }
}
