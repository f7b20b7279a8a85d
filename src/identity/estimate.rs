//! `pgchain identity estimate`: weights for a scored rule's comparison
//! levels, from the data, in the Fellegi-Sunter sense. A level's weight is
//! log2(m / u): m, how often one person's two records meet the level; u,
//! how often two people's records do. u comes from random pairs of records
//! the graph holds apart (in different clusters); m from pairs that share a value of an
//! exact rule taken as the truth (a national id, say), so the truth rule's
//! own columns keep their configured weights. The answer is a `compare`
//! block to review and paste into pipelines.yaml, never written silently.

use crate::config::ProcedureSpec;
use anyhow::{Context, bail};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};
use std::collections::BTreeMap;
use tokio_postgres::types::Json;

/// One level of one compared column, estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// The level's name: its kind (`exact`, `jaro_winkler`, …) or `else`.
    pub name: String,
    /// Share of truth pairs (one person) at this level.
    pub m: f64,
    /// Share of random pairs at this level.
    pub u: f64,
    /// log2(m / u), to one decimal.
    pub weight: f64,
    /// The weight pipelines.yaml gives now.
    pub configured: f64,
}

/// The estimate of a scored rule.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub rule: String,
    pub truth: String,
    pub random_pairs: usize,
    pub truth_pairs: usize,
    /// Compared column → its levels; None for the truth rule's own columns,
    /// whose m the truth decides (they keep their weights).
    pub columns: Vec<(String, Option<Vec<Level>>)>,
    /// The scored rule's `compare` block with the estimated weights.
    pub compare: Mapping,
}

/// The level name and weight of a configured level: `{KIND: P, weight: W}`
/// or `{else: W}`.
fn level_of(level: &Yaml) -> anyhow::Result<(String, f64)> {
    let map = level
        .as_mapping()
        .context("a level is a mapping, e.g. {exact: true, weight: 4}")?;
    if let Some(w) = map.get("else") {
        return Ok(("else".into(), w.as_f64().context("`else` is a number")?));
    }
    let name = if map.contains_key("swapped") {
        "swapped"
    } else {
        map.keys()
            .filter_map(Yaml::as_str)
            .find(|k| *k != "weight")
            .context("a level names its kind")?
    };
    let weight = map.get("weight").and_then(Yaml::as_f64).unwrap_or(0.0);
    Ok((name.to_string(), weight))
}

/// Shares of each level among `pairs` for column `column` (blank sides left
/// out), smoothed by half a pair per level so none is 0.
fn shares(pairs: &[Value], column: &str, names: &[String]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = names.iter().map(|n| (n.clone(), 0.5)).collect();
    for p in pairs {
        if let Some(level) = p["compared"][column]["level"].as_str()
            && let Some(c) = counts.get_mut(level)
        {
            *c += 1.0;
        }
    }
    let total: f64 = counts.values().sum();
    counts.values_mut().for_each(|c| *c /= total);
    counts
}

/// Estimates the weights of scored rule `rule` of the graph `schema`
/// (procedure `spec`) from `n` random pairs and up to `n` pairs sharing a
/// value of exact rule `truth` (default: the first exact rule).
pub async fn estimate(
    client: &tokio_postgres::Client,
    schema: &str,
    spec: &ProcedureSpec,
    rule: &str,
    truth: Option<&str>,
    n: i64,
) -> anyhow::Result<Estimate> {
    let scored = spec
        .vars
        .get("scored")
        .and_then(|s| s.get(rule))
        .with_context(|| format!("the graph has no scored rule `{rule}`"))?;
    let compare = scored
        .get("compare")
        .and_then(Yaml::as_mapping)
        .with_context(|| format!("scored rule `{rule}` has no `compare`"))?;
    let rules = spec.vars.get("rules").and_then(Yaml::as_mapping);
    let truth = match truth {
        Some(t) => t.to_string(),
        None => rules
            .and_then(|r| r.keys().next())
            .and_then(Yaml::as_str)
            .context("the graph has no exact rule to take as the truth; name one with --truth")?
            .to_string(),
    };
    let truth_columns: Vec<String> = rules
        .and_then(|r| r.get(truth.as_str()))
        .and_then(|t| t.get("columns"))
        .and_then(Yaml::as_sequence)
        .with_context(|| format!("the graph has no exact rule `{truth}`"))?
        .iter()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    let schema_ident = super::schema_ident(schema)?;
    let fetch = |sql: String, params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>| async move {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as _).collect();
        client
            .query(&sql, &refs)
            .await
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r.get::<_, Option<Json<Value>>>(0).map(|j| j.0))
                    .collect::<Vec<Value>>()
            })
            .map_err(|e| anyhow::anyhow!("{schema}: {}", super::said(&e)))
    };
    let random = fetch(
        format!("select {schema_ident}.sample_pairs($1, $2)"),
        vec![Box::new(rule.to_string()), Box::new(n as i32)],
    )
    .await?;
    let same = fetch(
        format!("select {schema_ident}.truth_pairs($1, $2, $3)"),
        vec![
            Box::new(rule.to_string()),
            Box::new(truth.clone()),
            Box::new(n as i32),
        ],
    )
    .await?;
    if same.is_empty() {
        bail!("no two records share a `{truth}` value: nothing to learn m from");
    }
    let mut columns = Vec::new();
    let mut out = Mapping::new();
    for (column, levels) in compare {
        let column = column.as_str().context("a compared column is named")?;
        let levels = levels
            .as_sequence()
            .with_context(|| format!("compare `{column}`: a list of levels"))?;
        let named: Vec<(String, f64)> = levels.iter().map(level_of).collect::<Result<_, _>>()?;
        let mut names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        if !names.iter().any(|n| n == "else") {
            names.push("else".into());
        }
        if truth_columns.iter().any(|c| c == column) {
            columns.push((column.to_string(), None));
            out.insert(column.into(), Yaml::Sequence(levels.clone()));
            continue;
        }
        let (m, u) = (
            shares(&same, column, &names),
            shares(&random, column, &names),
        );
        let mut estimated = Vec::new();
        let mut new_levels = Vec::new();
        for (level, (name, configured)) in levels.iter().zip(&named) {
            let weight = ((m[name] / u[name]).log2() * 10.0).round() / 10.0;
            estimated.push(Level {
                name: name.clone(),
                m: m[name],
                u: u[name],
                weight,
                configured: *configured,
            });
            let mut l = level.as_mapping().cloned().unwrap_or_default();
            if name == "else" {
                l.insert("else".into(), weight.into());
            } else {
                l.insert("weight".into(), weight.into());
            }
            new_levels.push(Yaml::Mapping(l));
        }
        columns.push((column.to_string(), Some(estimated)));
        out.insert(column.into(), Yaml::Sequence(new_levels));
    }
    Ok(Estimate {
        rule: rule.to_string(),
        truth,
        random_pairs: random.len(),
        truth_pairs: same.len(),
        columns,
        compare: out,
    })
}

impl Estimate {
    /// The estimate as a table: column, level, m, u, weight, configured.
    pub fn table(&self) -> String {
        let mut s = format!(
            "scored rule {}: m from {} pairs sharing {}, u from {} random pairs\n{:<14} {:<18} {:>7} {:>7} {:>7} {:>10}\n",
            self.rule,
            self.truth_pairs,
            self.truth,
            self.random_pairs,
            "column",
            "level",
            "m",
            "u",
            "weight",
            "configured"
        );
        for (column, levels) in &self.columns {
            match levels {
                None => s.push_str(&format!(
                    "{column:<14} (a column of the truth rule: weights kept)\n"
                )),
                Some(levels) => {
                    for l in levels {
                        s.push_str(&format!(
                            "{column:<14} {:<18} {:>7.4} {:>7.4} {:>7.1} {:>10.1}\n",
                            l.name, l.m, l.u, l.weight, l.configured
                        ));
                    }
                }
            }
        }
        s
    }

    /// The `compare` block with the estimated weights, as YAML to review.
    pub fn yaml(&self) -> anyhow::Result<String> {
        let mut doc = Mapping::new();
        doc.insert("compare".into(), Yaml::Mapping(self.compare.clone()));
        Ok(format!(
            "# pgchain identity estimate: scored rule `{}`; m from {} pairs sharing `{}`, u from {} random pairs.\n# Review, then put the weights into the rule's `compare` in pipelines.yaml.\n{}",
            self.rule,
            self.truth_pairs,
            self.truth,
            self.random_pairs,
            serde_yaml::to_string(&doc)?
        ))
    }
}
