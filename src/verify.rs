//! `pgchain verify`: compares a source table (any PostgreSQL) with its copy
//! by key, and with `--repair` re-emits the differing keys through the
//! pipeline so the chain fixes the target as a change would.
//!
//! The hashing happens in the databases. Each side reports, for a key range,
//! its row count and the sum of 60-bit row hashes (order-independent). Equal
//! ranges are done. An unequal range is split into `SPLIT` ranges at key
//! boundaries taken from its larger side, until a range holds at most
//! `leaf_rows` rows. Only then are (key, hash) pairs fetched and compared
//! here. Rows transferred therefore grow with the number of differences, not
//! with the table.

use crate::config::{Config, Format};
use crate::kafka::Record;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// Ranges an unequal range is split into.
const SPLIT: i64 = 16;

#[derive(Debug, Clone)]
pub struct VerifyArgs {
    /// The source database URL (any PostgreSQL).
    pub source: String,
    /// The source table, `schema.table`.
    pub table: String,
    /// The target table (its raw copy), `schema.table`, in postgres.url of
    /// the config (or --target-url).
    pub target: String,
    /// Key columns, comma-separated.
    pub key: Vec<String>,
    /// Columns to compare besides the key (default: every column both
    /// tables have, except the target's own `_`-prefixed bookkeeping).
    pub columns: Vec<String>,
    pub config: std::path::PathBuf,
    /// The target database; defaults to postgres.url of the config.
    pub target_url: Option<String>,
    /// Re-emit missing, extra and changed keys through the pipeline.
    pub repair: bool,
    /// The pipeline to re-emit through (default: the only one, or the one
    /// whose table filter names --table).
    pub pipeline: Option<String>,
    /// Largest range whose (key, hash) pairs are fetched and compared here.
    pub leaf_rows: i64,
    /// One JSON object instead of text.
    pub json: bool,
}

/// What verify found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub source_rows: i64,
    pub target_rows: i64,
    /// Keys (as text, in key-column order) in the source only.
    pub missing: Vec<Vec<String>>,
    /// Keys in the target only.
    pub extra: Vec<Vec<String>>,
    /// Keys in both whose compared columns differ.
    pub changed: Vec<Vec<String>>,
    /// Rows pgchain fetched from both databases (keys and hashes).
    pub rows_transferred: i64,
    /// Range queries run on each side.
    pub range_queries: i64,
    pub seconds: f64,
    /// Keys re-emitted by --repair.
    pub repaired: usize,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

/// One side: a connection and what to hash.
pub struct Side {
    client: Client,
    /// The table as PostgreSQL quotes it.
    table: String,
    /// Quoted key columns and their types.
    key: Vec<(String, String)>,
    /// Quoted compared columns (key first).
    cols: Vec<String>,
}

struct Column {
    name: String,
    quoted: String,
    ty: String,
}

async fn columns(
    client: &Client,
    table: &str,
    what: &str,
) -> anyhow::Result<(String, Vec<Column>)> {
    let row = client
        .query_one(
            "select to_regclass($1)::text, to_regclass($1)::oid",
            &[&table],
        )
        .await?;
    let Some(quoted) = row.get::<_, Option<String>>(0) else {
        bail!("{what} table `{table}` does not exist");
    };
    let oid: u32 = row.get(1);
    let rows = client
        .query(
            "select attname::text, quote_ident(attname), format_type(atttypid, atttypmod)
               from pg_attribute where attrelid = $1 and attnum > 0 and not attisdropped
              order by attnum",
            &[&oid],
        )
        .await?;
    Ok((
        quoted,
        rows.iter()
            .map(|r| Column {
                name: r.get(0),
                quoted: r.get(1),
                ty: r.get(2),
            })
            .collect(),
    ))
}

/// Connects both sides and settles the key and the compared columns.
pub async fn sides(
    source_url: &str,
    source_table: &str,
    target_url: &str,
    target_table: &str,
    key: &[String],
    only: &[String],
) -> anyhow::Result<(Side, Side)> {
    let source = crate::db::connect(source_url).await?;
    let target = crate::db::connect(target_url).await?;
    let (sq, scols) = columns(&source, source_table, "source").await?;
    let (tq, tcols) = columns(&target, target_table, "target").await?;
    for k in key {
        for (cols, what, t) in [
            (&scols, "source", source_table),
            (&tcols, "target", target_table),
        ] {
            if !cols.iter().any(|c| &c.name == k) {
                bail!("key column `{k}` is not in the {what} table `{t}`");
            }
        }
    }
    let compared: Vec<&str> = if only.is_empty() {
        scols
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !key.iter().any(|k| k == n))
            .filter(|n| !n.starts_with('_') && tcols.iter().any(|t| t.name == *n))
            .collect()
    } else {
        for c in only {
            for (cols, what) in [(&scols, "source"), (&tcols, "target")] {
                if !cols.iter().any(|x| &x.name == c) {
                    bail!("column `{c}` is not in the {what} table");
                }
            }
        }
        only.iter().map(String::as_str).collect()
    };
    let side = |client: Client, table: String, cols: &[Column]| {
        let find = |n: &str| cols.iter().find(|c| c.name == n).expect("checked");
        Side {
            client,
            table,
            key: key
                .iter()
                .map(|k| (find(k).quoted.clone(), find(k).ty.clone()))
                .collect(),
            cols: key
                .iter()
                .map(String::as_str)
                .chain(compared.iter().copied())
                .map(|n| find(n).quoted.clone())
                .collect(),
        }
    };
    Ok((side(source, sq, &scols), side(target, tq, &tcols)))
}

/// A key range: from `lo` (inclusive) to `hi` (exclusive); `None` is open.
#[derive(Debug, Clone)]
struct Range {
    lo: Option<Vec<String>>,
    hi: Option<Vec<String>>,
}

impl Side {
    fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn row_hash(&self) -> String {
        let cols: Vec<String> = self.cols.iter().map(|c| format!("{c}::text")).collect();
        format!("md5(row({})::text)", cols.join(", "))
    }

    /// The WHERE clause of `r`, with its bound values.
    fn range_sql(&self, r: &Range) -> (String, Vec<String>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let tuple = |params: &mut Vec<String>, vals: &[String]| {
            let parts: Vec<String> = self
                .key
                .iter()
                .zip(vals)
                .map(|((_, ty), v)| {
                    params.push(v.clone());
                    format!("${}::text::{ty}", params.len())
                })
                .collect();
            format!("({})", parts.join(", "))
        };
        if let Some(lo) = &r.lo {
            let t = tuple(&mut params, lo);
            conds.push(format!("({}) >= {t}", self.key_list()));
        }
        if let Some(hi) = &r.hi {
            let t = tuple(&mut params, hi);
            conds.push(format!("({}) < {t}", self.key_list()));
        }
        if conds.is_empty() {
            ("true".to_string(), params)
        } else {
            (conds.join(" and "), params)
        }
    }

    async fn query(
        &self,
        sql: &str,
        params: &[String],
    ) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client
            .query(sql, &refs)
            .await
            .with_context(|| format!("on {}", self.table))
    }

    /// (rows, sum of row hashes) of `r`.
    async fn digest(&self, r: &Range) -> anyhow::Result<(i64, String)> {
        let (cond, params) = self.range_sql(r);
        let sql = format!(
            "select count(*), coalesce(sum(('x' || substr({}, 1, 15))::bit(60)::bigint), 0)::text
               from {} where {cond}",
            self.row_hash(),
            self.table
        );
        let rows = self.query(&sql, &params).await?;
        Ok((rows[0].get(0), rows[0].get(1)))
    }

    /// The first keys of `parts` equal slices of `r`, the first one left out.
    async fn boundaries(&self, r: &Range, parts: i64) -> anyhow::Result<Vec<Vec<String>>> {
        let (cond, params) = self.range_sql(r);
        let keys_text: Vec<String> = self.key.iter().map(|(k, _)| format!("{k}::text")).collect();
        let sql = format!(
            "select distinct on (slice) {text}
               from (select {keys}, ntile({parts}) over (order by {keys}) as slice
                       from {table} where {cond}) s
              where slice > 1
              order by slice, {keys}",
            text = keys_text.join(", "),
            keys = self.key_list(),
            table = self.table,
        );
        let rows = self.query(&sql, &params).await?;
        Ok(rows
            .iter()
            .map(|r| (0..self.key.len()).map(|i| r.get::<_, String>(i)).collect())
            .collect())
    }

    /// `(k1, k2) = ($1::text::type1, $2::text::type2)`.
    fn key_eq_sql(&self) -> String {
        let vals: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::text::{ty}", i + 1))
            .collect();
        format!("({}) = ({})", self.key_list(), vals.join(", "))
    }

    async fn hashes(&self, r: &Range) -> anyhow::Result<BTreeMap<Vec<String>, String>> {
        let (cond, params) = self.range_sql(r);
        let keys_text: Vec<String> = self.key.iter().map(|(k, _)| format!("{k}::text")).collect();
        let sql = format!(
            "select {}, {} from {} where {cond}",
            keys_text.join(", "),
            self.row_hash(),
            self.table
        );
        let rows = self.query(&sql, &params).await?;
        let n = self.key.len();
        Ok(rows
            .iter()
            .map(|r| ((0..n).map(|i| r.get::<_, String>(i)).collect(), r.get(n)))
            .collect())
    }
}

/// Compares `source` with `target` range by range.
pub async fn compare(
    source: &Side,
    target: &Side,
    leaf_rows: i64,
    progress: &ProgressBar,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report::default();
    let whole = Range { lo: None, hi: None };
    let (s, t) = tokio::try_join!(source.digest(&whole), target.digest(&whole))?;
    report.range_queries += 1;
    report.source_rows = s.0;
    report.target_rows = t.0;
    progress.set_length(s.0.max(t.0) as u64);
    let mut todo = vec![(whole, s, t)];
    while let Some((range, s, t)) = todo.pop() {
        if s == t {
            progress.inc(s.0 as u64);
            continue;
        }
        if s.0.max(t.0) <= leaf_rows {
            let (sh, th) = tokio::try_join!(source.hashes(&range), target.hashes(&range))?;
            report.rows_transferred += (sh.len() + th.len()) as i64;
            for (k, h) in &sh {
                match th.get(k) {
                    None => report.missing.push(k.clone()),
                    Some(x) if x != h => report.changed.push(k.clone()),
                    Some(_) => {}
                }
            }
            report
                .extra
                .extend(th.keys().filter(|k| !sh.contains_key(*k)).cloned());
            progress.inc(s.0.max(t.0) as u64);
            continue;
        }
        // Split at the larger side's keys.
        let bigger = if s.0 >= t.0 { source } else { target };
        let cuts = bigger.boundaries(&range, SPLIT).await?;
        report.rows_transferred += cuts.len() as i64;
        let mut edges: Vec<Option<Vec<String>>> = vec![range.lo.clone()];
        edges.extend(cuts.into_iter().map(Some));
        edges.push(range.hi.clone());
        for w in edges.windows(2).rev() {
            let sub = Range {
                lo: w[0].clone(),
                hi: w[1].clone(),
            };
            let (s, t) = tokio::try_join!(source.digest(&sub), target.digest(&sub))?;
            report.range_queries += 1;
            todo.push((sub, s, t));
        }
    }
    for v in [&mut report.missing, &mut report.extra, &mut report.changed] {
        v.sort_by(|a, b| key_order(a, b));
    }
    progress.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Keys in a people's order: numbers as numbers, the rest as text.
fn key_order(a: &[String], b: &[String]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.total_cmp(&q),
            _ => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// The pipeline that re-emits rows of `table`.
fn pipeline_for<'c>(
    config: &'c Config,
    table: &str,
    named: Option<&str>,
) -> anyhow::Result<(&'c str, &'c crate::config::Pipeline)> {
    if let Some(name) = named {
        return config
            .pipelines
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .with_context(|| format!("no pipeline `{name}` in {}", config.path.display()));
    }
    let bare = table.rsplit('.').next().unwrap_or(table).to_lowercase();
    let by_table: Vec<_> = config
        .pipelines
        .iter()
        .filter(|(_, p)| {
            p.table.as_deref().is_some_and(|t| {
                let t = t.to_lowercase();
                t == table.to_lowercase() || t.rsplit('.').next() == Some(bare.as_str())
            })
        })
        .collect();
    match (by_table.as_slice(), config.pipelines.len()) {
        ([(n, p)], _) => Ok((n.as_str(), p)),
        ([], 1) => {
            let (n, p) = config.pipelines.first().expect("one");
            Ok((n.as_str(), p))
        }
        _ => bail!("name the pipeline to repair through with --pipeline"),
    }
}

/// Messages that make the chain bring `keys` in line with the source: a
/// read (`op: r`; GoldenGate has no read, so an insert) of the source row,
/// or a delete of a key the source no longer has.
/// Where and how re-emitted rows go.
pub struct Reemit<'a> {
    pub format: Format,
    pub topic: &'a str,
    /// `schema.table` or `table`, as the pipeline's filter (or the source)
    /// names it.
    pub table: &'a str,
    pub key_names: &'a [String],
}

pub async fn repair_records(
    source: &Side,
    to: &Reemit<'_>,
    upserts: &[Vec<String>],
    deletes: &[Vec<String>],
) -> anyhow::Result<Vec<Record>> {
    let (format, topic, key_names) = (to.format, to.topic, to.key_names);
    let (schema, table) = match to.table.rsplit_once('.') {
        Some((s, t)) => (Some(s.to_string()), t.to_string()),
        None => (None, to.table.to_string()),
    };
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    let key_obj = |vals: &serde_json::Map<String, serde_json::Value>| {
        let mut k = serde_json::Map::new();
        for n in key_names {
            k.insert(
                n.clone(),
                vals.get(n).cloned().unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::Value::Object(k)
    };
    let src = serde_json::json!({"schema": schema, "table": table, "ts_ms": ts_ms, "connector": "pgchain-verify"});
    let mut out = Vec::new();
    let eq = source.key_eq_sql();
    for (keys, delete) in upserts
        .iter()
        .map(|k| (k, false))
        .chain(deletes.iter().map(|k| (k, true)))
    {
        let row: serde_json::Map<String, serde_json::Value> = if delete {
            key_names
                .iter()
                .zip(keys)
                .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
                .collect()
        } else {
            let sql = format!("select to_jsonb(t) from {} t where {eq}", source.table);
            let rows = source.query(&sql, keys).await?;
            match rows.first().map(|r| r.get::<_, serde_json::Value>(0)) {
                Some(serde_json::Value::Object(m)) => m,
                _ => continue,
            }
        };
        // Typed key values come from the row when there is one.
        let key = key_obj(&row);
        let value = match (format, delete) {
            (Format::Debezium, false) => {
                Some(serde_json::json!({"op": "r", "before": null, "after": row, "source": src}))
            }
            (Format::Debezium, true) => {
                Some(serde_json::json!({"op": "d", "before": row, "after": null, "source": src}))
            }
            (Format::DebeziumFlat, d) => {
                // As the flattening transform writes it with add.fields and
                // delete.handling.mode=rewrite.
                let mut flat = row.clone();
                flat.insert("__op".into(), (if d { "d" } else { "r" }).into());
                flat.insert("__schema".into(), schema.clone().into());
                flat.insert("__table".into(), table.clone().into());
                flat.insert("__source_ts_ms".into(), ts_ms.into());
                flat.insert("__deleted".into(), d.to_string().into());
                Some(serde_json::Value::Object(flat))
            }
            (Format::Json, false) => Some(serde_json::Value::Object(row.clone())),
            (Format::Json, true) => None,
            (Format::Ogg, d) => {
                let name = match &schema {
                    Some(s) => format!("{s}.{table}"),
                    None => table.clone(),
                };
                let op_ts = now.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                Some(if d {
                    serde_json::json!({"table": name, "op_type": "D", "op_ts": op_ts, "primary_keys": key_names, "before": row})
                } else {
                    serde_json::json!({"table": name, "op_type": "I", "op_ts": op_ts, "primary_keys": key_names, "after": row})
                })
            }
        };
        out.push(Record {
            topic: topic.to_string(),
            key: Some(key.to_string().into_bytes()),
            value: value.map(|v| v.to_string().into_bytes()),
            headers: vec![("pgchain.verify".to_string(), Some(b"repair".to_vec()))],
        });
    }
    Ok(out)
}

/// `pgchain verify`: compares, prints, and repairs when asked. Returns the
/// report of the comparison.
pub async fn run(args: &VerifyArgs, config: &Config) -> anyhow::Result<Report> {
    let target_url = args
        .target_url
        .clone()
        .unwrap_or_else(|| config.postgres.url.clone());
    let (source, target) = sides(
        &args.source,
        &args.table,
        &target_url,
        &args.target,
        &args.key,
        &args.columns,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", redact(&e.to_string(), &args.source)))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} rows compared {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut report = compare(&source, &target, args.leaf_rows.max(1), &bar).await?;
    if args.repair && !report.clean() {
        let (name, p) = pipeline_for(config, &args.table, args.pipeline.as_deref())?;
        let topic = p
            .all_topics()
            .first()
            .map(|t| t.to_string())
            .with_context(|| format!("pipeline `{name}` has no topic"))?;
        let upserts: Vec<Vec<String>> = report
            .missing
            .iter()
            .chain(&report.changed)
            .cloned()
            .collect();
        let records = repair_records(
            &source,
            &Reemit {
                format: p.format,
                topic: &topic,
                table: p.table.as_deref().unwrap_or(&args.table),
                key_names: &args.key,
            },
            &upserts,
            &report.extra,
        )
        .await?;
        report.repaired = records.len();
        let cluster = config.cluster();
        tokio::task::spawn_blocking(move || crate::kafka::produce_on(&cluster, &records)).await??;
    }
    Ok(report)
}

fn redact(text: &str, url: &str) -> String {
    text.replace(url, &crate::db::redact_url(url))
}

/// The report for people.
pub fn text(r: &Report, show: usize) -> String {
    let mut out = format!(
        "source rows {}, target rows {}: {} missing, {} extra, {} changed\n",
        r.source_rows,
        r.target_rows,
        r.missing.len(),
        r.extra.len(),
        r.changed.len()
    );
    for (what, keys) in [
        ("missing", &r.missing),
        ("extra", &r.extra),
        ("changed", &r.changed),
    ] {
        for k in keys.iter().take(show) {
            out.push_str(&format!("  {what:<8} {}\n", k.join(", ")));
        }
        if keys.len() > show {
            out.push_str(&format!("  {what:<8} … and {} more\n", keys.len() - show));
        }
    }
    out.push_str(&format!(
        "{:.2} s, {} range queries per side, {} rows transferred\n",
        r.seconds, r.range_queries, r.rows_transferred
    ));
    if r.repaired > 0 {
        out.push_str(&format!(
            "re-emitted {} key(s) through the pipeline; run verify again once they are applied\n",
            r.repaired
        ));
    }
    out
}
