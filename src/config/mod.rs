//! `pipelines.yaml`: parse → validate, reporting every problem with file:line.
//!
//! Parsing fails fast on syntax and unknown keys (serde names the line);
//! validation then checks the whole file and returns **all** problems at once.

mod env;
mod failure;
mod lines;
mod monitoring;
mod provider;
mod registry;

pub use failure::{ClassRetry, DeadLetters, Dur, Retries, parse_duration};
pub use monitoring::{Alerts, Monitoring};

pub use lines::LineIndex;
pub use provider::{Provided, Provider};
pub use registry::SchemaRegistry;

use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub postgres: PostgresConfig,
    pub pipelines: IndexMap<String, Pipeline>,
    /// Where events go that cannot be applied, and their recovery.
    #[serde(default)]
    pub dead_letters: DeadLetters,
    /// The HTTP listener: metrics and health.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// The alert webhook's conditions.
    #[serde(default)]
    pub alerts: Alerts,
    /// Procedures rendered from templates by `pgchain render`.
    #[serde(default)]
    pub procedures: IndexMap<String, ProcedureSpec>,
    /// A Confluent schema registry: messages in its wire format (Avro,
    /// JSON Schema) are decoded with the schema it holds.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistry>,
    /// The file this came from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub lines: LineIndex,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,…`; filled from the environment when `provider` is set.
    #[serde(default)]
    pub brokers: String,
    /// A platform whose environment holds the connection (`heroku`).
    #[serde(default)]
    pub provider: Option<Provider>,
    /// Put before every topic name and the group id on the brokers
    /// (multi-tenant clusters); `KAFKA_PREFIX` under `provider: heroku`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// What `provider` read from the environment.
    #[serde(skip)]
    pub provided: Provided,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where a partition starts when the ledger has nothing for it.
    #[serde(default)]
    pub start_from: StartFrom,
    /// What a partition does when retention deleted offsets it has not
    /// applied yet.
    #[serde(default)]
    pub on_gap: OnGap,
    /// Static membership: the `run` consumer's `group.instance.id`, where
    /// `{hostname}` stands for the host name. Off by default.
    #[serde(default)]
    pub instance_id: Option<serde_yaml::Value>,
    /// Passed to librdkafka as they are (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub options: IndexMap<String, serde_yaml::Value>,
}

impl KafkaConfig {
    /// The consumer's `group.instance.id` from `instance_id`, `{hostname}`
    /// replaced (None when static membership is off).
    pub fn group_instance_id(&self) -> Result<Option<String>, String> {
        let Some(v) = &self.instance_id else {
            return Ok(None);
        };
        let template = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Mapping(m)
                if m.len() == 1 && m.get("hostname").is_some_and(|v| v.is_null()) =>
            {
                return Err(
                    "`kafka.instance_id: {hostname}` needs quotes, `\"{hostname}\"` \
                     (unquoted, YAML reads it as a mapping)"
                        .into(),
                );
            }
            _ => return Err("`kafka.instance_id` must be a string".into()),
        };
        let rest = template.replace(HOSTNAME, "");
        if let Some(c) = rest.chars().find(|c| !instance_id_char(*c)) {
            return Err(format!(
                "`kafka.instance_id` `{template}`: `{c}` is not allowed; use letters, digits, \
                 `.`, `_`, `-` and `{HOSTNAME}`"
            ));
        }
        let id = if template.contains(HOSTNAME) {
            template.replace(HOSTNAME, &hostname()?)
        } else {
            template
        };
        if id.is_empty() {
            return Err("`kafka.instance_id` is empty".into());
        }
        if id.len() > 249 || !id.chars().all(instance_id_char) {
            return Err(format!(
                "`kafka.instance_id` gives `{id}`, which Kafka refuses: at most 249 letters, \
                 digits, `.`, `_` and `-`"
            ));
        }
        Ok(Some(id))
    }
}

/// What `kafka.instance_id` replaces with the host name.
const HOSTNAME: &str = "{hostname}";

/// A character Kafka takes in a `group.instance.id`.
fn instance_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// This machine's host name (in a container, the container's).
fn hostname() -> Result<String, String> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    read("/proc/sys/kernel/hostname")
        .or_else(|| read("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            "`kafka.instance_id` uses {hostname}, but the host name cannot be read \
             (/proc/sys/kernel/hostname, /etc/hostname, $HOSTNAME)"
                .to_string()
        })
}

/// Where a partition starts when `pgchain.offsets` has no row for it (a new
/// database, a new group, a new topic) but Kafka may hold a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// From the partition's first offset: nothing is skipped that this
    /// database never applied (the ledger keeps a replay from applying twice).
    #[default]
    LedgerOrEarliest,
    /// From the group's committed offset in Kafka (earliest without one):
    /// for a database that already holds what was applied before.
    KafkaCommit,
    /// From the end: only events produced from now on.
    Latest,
}

impl StartFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::LedgerOrEarliest => "ledger_or_earliest",
            StartFrom::KafkaCommit => "kafka_commit",
            StartFrom::Latest => "latest",
        }
    }
}

/// What a partition does when the log no longer holds the next offset to
/// apply (retention deleted it first), found at assignment or while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnGap {
    /// Stop the partition, the deleted range named; nothing after it is
    /// applied until someone decides (re-snapshot the source, move the ledger).
    #[default]
    Stop,
    /// Go on from the log's new start: the range is logged, counted
    /// (`pgchain_offsets_skipped_total`), alerted and recorded in
    /// `pgchain.skipped_offsets`, and the ledger moves past it.
    Skip,
}

impl OnGap {
    pub fn as_str(self) -> &'static str {
        match self {
            OnGap::Stop => "stop",
            OnGap::Skip => "skip",
        }
    }
}

/// `kafka.prefix` applied: the brokers know every topic and the group by
/// the prefixed name; pgchain's tables, logs, metrics and commands use the
/// names as the user wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefix(std::sync::Arc<str>);

impl Prefix {
    pub fn new(prefix: &str) -> Prefix {
        Prefix(prefix.into())
    }

    /// The name the brokers know.
    pub fn wire(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    /// The name as the user wrote it, from the brokers' one.
    pub fn user<'a>(&self, wire: &'a str) -> &'a str {
        wire.strip_prefix(&*self.0).unwrap_or(wire)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a Kafka client needs: the brokers, the librdkafka options and the
/// name prefix. Debug shows option names only (values may be secrets).
#[derive(Clone, Default)]
pub struct Cluster {
    pub brokers: String,
    pub options: Vec<(String, String)>,
    pub prefix: Prefix,
}

impl Cluster {
    /// Plain brokers, no options, no prefix (the demo, tests).
    pub fn plain(brokers: &str) -> Cluster {
        Cluster {
            brokers: brokers.to_string(),
            ..Cluster::default()
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("brokers", &self.brokers)
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix.as_str())
            .finish()
    }
}

fn default_group_id() -> String {
    "pgchain".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "default_url")]
    pub url: String,
    /// Connections in the pool; each partition in flight holds one.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Events of one partition that already wait run in one transaction, up
    /// to this many (each still runs its whole chain); 1 = one per event.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: default_url(),
            pool_size: default_pool_size(),
            max_batch: default_max_batch(),
        }
    }
}

pub fn default_url() -> String {
    "postgres://postgres@127.0.0.1:5432/postgres".to_string()
}

fn default_pool_size() -> usize {
    16
}

fn default_max_batch() -> usize {
    32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Debezium,
    /// Debezium rows flattened by the ExtractNewRecordState transform.
    #[serde(rename = "debezium-flat")]
    DebeziumFlat,
    Ogg,
    Json,
}

impl Format {
    /// Debezium's own envelope or its flattened rows.
    pub fn is_debezium(self) -> bool {
        matches!(self, Format::Debezium | Format::DebeziumFlat)
    }
}

/// What to do with a Kafka tombstone (null value after a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tombstones {
    /// The delete event before it already carried the change.
    #[default]
    Skip,
    /// Run the chain with `op: d`, the key and no rows.
    Deliver,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub format: Format,
    /// Only events of this source table (`table` or `schema.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// Key columns, for messages that do not carry their key.
    #[serde(default)]
    pub key: Vec<String>,
    /// `source.system` in the event; defaults to what the message says, or
    /// the pipeline name.
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub tombstones: Tombstones,
    /// The Debezium connector's `unavailable.value.placeholder`, when it is
    /// not the default `__debezium_unavailable_value` (always recognised).
    #[serde(default)]
    pub unavailable_placeholder: Option<String>,
    pub chain: Vec<String>,
    /// Retries per error class before an event is parked or dead-lettered.
    #[serde(default)]
    pub retries: Retries,
    /// How GoldenGate's handler writes the messages (`format: ogg`).
    #[serde(default)]
    pub ogg: Option<OggOptions>,
}

/// The GoldenGate handler settings a topic's messages were written with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OggOptions {
    /// The `op_type` codes (`gg.handler.name.format.insertOpKey`, …).
    #[serde(default)]
    pub op_types: OpTypes,
    /// The zone `op_ts` is written in: `UTC` (GoldenGate's default), an IANA
    /// name (`Europe/Berlin`) or an offset (`+02:00`).
    #[serde(default = "utc")]
    pub op_ts_zone: String,
}

impl Default for OggOptions {
    fn default() -> Self {
        OggOptions {
            op_types: OpTypes::default(),
            op_ts_zone: utc(),
        }
    }
}

fn utc() -> String {
    "UTC".to_string()
}

/// GoldenGate's `insertOpKey`, `updateOpKey`, `deleteOpKey` and
/// `truncateOpKey`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpTypes {
    pub insert: String,
    pub update: String,
    pub delete: String,
    pub truncate: String,
}

impl Default for OpTypes {
    fn default() -> Self {
        OpTypes {
            insert: "I".into(),
            update: "U".into(),
            delete: "D".into(),
            truncate: "T".into(),
        }
    }
}

/// A zone local times are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Fixed(chrono::FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `UTC`, an IANA name or `±HH:MM`.
    pub fn parse(text: &str) -> Result<Zone, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Fixed(chrono::FixedOffset::east_opt(0).expect("zero")));
        }
        if let Some(sign) = t.chars().next().filter(|c| *c == '+' || *c == '-')
            && let Some((h, m)) = t[1..].split_once(':')
            && let (Ok(h), Ok(m)) = (h.parse::<i32>(), m.parse::<i32>())
            && (0..=18).contains(&h)
            && (0..60).contains(&m)
        {
            let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
            if let Some(o) = chrono::FixedOffset::east_opt(secs) {
                return Ok(Zone::Fixed(o));
            }
        }
        t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
            format!("`{text}` is not a zone: write UTC, an IANA name (Europe/Berlin) or an offset (+02:00)")
        })
    }

    /// Milliseconds since the epoch of a local wall-clock time in this zone
    /// (the earlier instant when a DST change repeats it).
    pub fn epoch_millis(&self, local: chrono::NaiveDateTime) -> Option<i64> {
        use chrono::TimeZone;
        match self {
            Zone::Fixed(o) => o
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis()),
            Zone::Named(z) => z
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis()),
        }
    }
}

impl Pipeline {
    pub fn all_topics(&self) -> Vec<&str> {
        self.topic
            .iter()
            .chain(self.topics.iter())
            .map(String::as_str)
            .collect()
    }
}

/// A stage procedure rendered from a template in `sql/templates/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureSpec {
    /// Template name: `sql/templates/{template}.sql.j2`.
    pub template: String,
    /// Variables the template uses; a missing one is an error.
    #[serde(default)]
    pub vars: IndexMap<String, serde_yaml::Value>,
}

/// Every problem found in a config file, each already carrying `file:line:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// The folder a config file's relative paths resolve against: its own. A
/// bare `pipelines.yaml` has the empty parent, so the paths stay relative
/// (`sql/migrations`), as a user typed them.
pub fn project_dir(config: &Path) -> PathBuf {
    config.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Deserializes the substituted text. YAML merge keys (`<<: *base`) are
/// resolved first; without them serde reads the text directly, so its errors
/// keep their exact line.
fn parse(text: &str, file: &str, lines: &LineIndex) -> Result<Config, ConfigError> {
    let located = |e: serde_yaml::Error| ConfigError {
        problems: vec![match e.location() {
            Some(loc) => {
                let msg = e.to_string();
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                format!(
                    "{file}:{}: {}",
                    loc.line(),
                    msg.strip_suffix(&suffix).unwrap_or(&msg)
                )
            }
            None => format!("{file}: {e}"),
        }],
    };
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(located)?;
    if !has_merge_key(&value) {
        return serde_yaml::from_str(text).map_err(located);
    }
    value.apply_merge().map_err(located)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        // The innermost key that has a line (a merged key sits at its anchor).
        let line = lines.line(&refs);
        let msg = e.into_inner().to_string();
        ConfigError {
            problems: vec![match line {
                Some(line) => format!("{file}:{line}: {}: {msg}", path.join(".")),
                None => format!("{file}: {}: {msg}", path.join(".")),
            }],
        }
    })
}

fn has_merge_key(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        serde_yaml::Value::Sequence(s) => s.iter().any(has_merge_key),
        serde_yaml::Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

impl Config {
    /// Reads, substitutes `${VAR}`, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        Config::from_text(&text, path, |name| std::env::var(name).ok())
    }

    pub fn from_text(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = env::substitute(text, &env).map_err(|p| ConfigError {
            problems: p
                .into_iter()
                .map(|(line, m)| format!("{file}:{line}: {m}"))
                .collect(),
        })?;
        let lines = LineIndex::build(&text);
        let mut config = parse(&text, &file, &lines)?;
        config.path = path.to_path_buf();
        config.lines = lines;
        if let Some(provider) = config.kafka.provider {
            config.provide(provider, &env)?;
        }
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Fills the brokers, options and prefix from `provider`'s environment.
    fn provide(
        &mut self,
        provider: Provider,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let at = self.at(&["kafka", "provider"]);
        let name = provider.as_str();
        let mut problems = Vec::new();
        if !self.kafka.brokers.trim().is_empty() {
            problems.push(format!(
                "{}`kafka.brokers` and `kafka.provider: {name}` both name the brokers: remove `kafka.brokers`",
                self.at(&["kafka", "brokers"])
            ));
        }
        match provider::resolve(provider, env) {
            Ok(provided) => {
                self.kafka.brokers = provided.brokers.clone();
                if self.kafka.prefix.is_none() {
                    self.kafka.prefix = provided.prefix.clone();
                }
                self.kafka.provided = provided;
            }
            Err(p) => problems.extend(
                p.into_iter()
                    .map(|m| format!("{at}kafka.provider {name}: {m}")),
            ),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// `kafka.prefix`, for every name that goes to the brokers.
    pub fn prefix(&self) -> Prefix {
        Prefix::new(self.kafka.prefix.as_deref().unwrap_or(""))
    }

    /// The brokers, options and prefix every Kafka client of this config uses.
    pub fn cluster(&self) -> Cluster {
        Cluster {
            brokers: self.kafka.brokers.clone(),
            options: self.kafka_options(),
            prefix: self.prefix(),
        }
    }

    /// The group id the brokers know (`kafka.prefix` applied).
    pub fn wire_group(&self) -> String {
        self.prefix().wire(&self.kafka.group_id)
    }

    /// `file:line: ` for a key path.
    pub fn at(&self, path: &[&str]) -> String {
        match self.lines.line(path) {
            Some(line) => format!("{}:{line}: ", self.path.display()),
            None => format!("{}: ", self.path.display()),
        }
    }

    /// Every topic some pipeline reads, each once, in declaration order.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = Vec::new();
        for topic in self.pipelines.values().flat_map(|p| p.all_topics()) {
            if !t.iter().any(|s| s == topic) {
                t.push(topic.to_string());
            }
        }
        t
    }

    /// The folder relative paths of this project resolve against: the
    /// config file's own, never the working directory.
    pub fn dir(&self) -> PathBuf {
        project_dir(&self.path)
    }

    /// The project's own migrations: `sql/migrations` beside the config file.
    pub fn migrations_dir(&self) -> PathBuf {
        self.dir().join("sql/migrations")
    }

    /// The project's own templates: `sql/templates` beside the config file.
    pub fn templates_dir(&self) -> PathBuf {
        self.dir().join("sql/templates")
    }

    /// librdkafka options, as strings: what `kafka.provider` set, then
    /// `kafka.options` (a key in both takes the value of `kafka.options`).
    /// A relative file in a `*.location` option (`ssl.ca.location`, …)
    /// resolves against the config file's folder, as the project's other
    /// paths do.
    pub fn kafka_options(&self) -> Vec<(String, String)> {
        let dir = self.dir();
        let own = self
            .kafka
            .options
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), scalar(v)?)))
            .map(move |(k, v)| {
                let relative = k.ends_with(".location")
                    && v != "probe"
                    && !v.is_empty()
                    && Path::new(&v).is_relative();
                let v = if relative {
                    dir.join(&v).display().to_string()
                } else {
                    v
                };
                (k, v)
            });
        self.kafka
            .provided
            .options
            .iter()
            .cloned()
            .chain(own)
            .collect()
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Problems {
            config: self,
            list: Vec::new(),
        };
        self.validate_services(&mut problems);
        for (name, spec) in &self.procedures {
            if !valid_step_name(name) {
                problems.add(
                    &["procedures", name],
                    format!("procedure `{name}` is not `schema.procedure` ({IDENT_RULE})"),
                );
            }
            let t = &spec.template;
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.add(
                    &["procedures", name, "template"],
                    format!("procedure `{name}`: template `{t}` may hold only lower-case letters, digits and `_`"),
                );
            }
        }
        let mut routes = Routes::default();
        for (name, p) in &self.pipelines {
            self.validate_pipeline(name, p, &mut problems);
            self.validate_routes(name, p, &mut routes, &mut problems);
        }
        let mut list = problems.list;
        self.validate_sharing(&mut list);
        list
    }

    fn validate_services(&self, problems: &mut Problems<'_>) {
        if self.kafka.brokers.trim().is_empty() {
            problems.add(
                &["kafka", "brokers"],
                "`kafka.brokers` is empty (give `host:port,…`, or `provider: heroku` to read KAFKA_URL)"
                    .into(),
            );
        }
        if self.kafka.group_id.trim().is_empty() {
            problems.add(&["kafka", "group_id"], "`kafka.group_id` is empty".into());
        }
        if let Some(prefix) = &self.kafka.prefix
            && !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            problems.add(
                &["kafka", "prefix"],
                format!("`kafka.prefix` `{prefix}` may hold only letters, digits, `.`, `_` and `-` (a Kafka topic name's characters)"),
            );
        }
        for (k, v) in &self.kafka.options {
            if scalar(v).is_none() {
                problems.add(
                    &["kafka", "options", k],
                    format!("kafka option `{k}` must be a single value"),
                );
            }
            if k == "auto.offset.reset" {
                problems.add(
                    &["kafka", "options", k],
                    "kafka option `auto.offset.reset` is set by pgchain itself (a reset must never skip \
                     events silently): `kafka.start_from` says where a partition the ledger does not know \
                     starts, `kafka.on_gap` what happens when retention deleted events not yet applied"
                        .into(),
                );
            } else if MANAGED_OPTIONS.contains(&k.as_str()) {
                problems.add(
                    &["kafka", "options", k],
                    format!(
                        "kafka option `{k}` is set by pgchain itself (exactly-once depends on it)"
                    ),
                );
            }
        }
        if self.kafka.instance_id.is_some() {
            if let Err(e) = self.kafka.group_instance_id() {
                problems.add(&["kafka", "instance_id"], e);
            }
            if self.kafka.options.contains_key("group.instance.id") {
                problems.add(
                    &["kafka", "instance_id"],
                    "`kafka.instance_id` and kafka option `group.instance.id` both set the \
                     consumer's static member id; keep one"
                        .into(),
                );
            }
        }
        if self.postgres.pool_size == 0 {
            problems.add(
                &["postgres", "pool_size"],
                "`postgres.pool_size` must be at least 1".into(),
            );
        }
        if self.postgres.max_batch == 0 {
            problems.add(
                &["postgres", "max_batch"],
                "`postgres.max_batch` must be at least 1".into(),
            );
        }
        if self.pipelines.is_empty() {
            problems.add(&["pipelines"], "no pipelines are declared".into());
        }
        if let Some(registry) = &self.schema_registry {
            for (key, msg) in registry.problems() {
                problems.add(&["schema_registry", key], msg);
            }
        }
        let dl = &self.dead_letters;
        if dl.topic.trim().is_empty() {
            problems.add(
                &["dead_letters", "topic"],
                "`dead_letters.topic` is empty".into(),
            );
        }
        for topic in self.topics() {
            let dlq = dl.topic_for(&topic);
            if self.topics().contains(&dlq) {
                problems.add(
                    &["dead_letters", "topic"],
                    format!("dead letters of topic `{topic}` would go to `{dlq}`, which a pipeline reads; use a topic of its own (e.g. `{{topic}}.dlq`)"),
                );
            }
        }
        if let Some(addr) = self.monitoring.listen_addr()
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            problems.add(
                &["monitoring", "listen"],
                format!("`monitoring.listen` must be host:port with an IP address, e.g. 0.0.0.0:9187; found `{addr}`"),
            );
        }
        if self.alerts.check_every.0.is_zero() {
            problems.add(
                &["alerts", "check_every"],
                "`alerts.check_every` must be more than 0".into(),
            );
        }
        if dl.recovery_interval.0.is_zero() {
            problems.add(
                &["dead_letters", "recovery_interval"],
                "`dead_letters.recovery_interval` must be more than 0".into(),
            );
        }
    }

    /// Checks one pipeline on its own.
    fn validate_pipeline(&self, name: &str, p: &Pipeline, problems: &mut Problems<'_>) {
        let at = |k: &'static str| ["pipelines", name, k];
        if !valid_pipeline_name(name) {
            problems.add(
                &["pipelines", name],
                format!("pipeline name `{name}` may hold only letters, digits, `_`, `-` and `.`"),
            );
        }
        if p.all_topics().is_empty() {
            problems.add(
                &["pipelines", name],
                format!("pipeline `{name}` has no `topic` or `topics`"),
            );
        }
        if p.chain.is_empty() {
            problems.add(
                &at("chain"),
                format!("pipeline `{name}` has an empty chain"),
            );
        }
        for (i, step) in p.chain.iter().enumerate() {
            if !valid_step_name(step) {
                let i = i.to_string();
                problems.add(
                    &["pipelines", name, "chain", &i],
                    format!(
                        "pipeline `{name}`: step `{step}` is not `schema.procedure` ({IDENT_RULE})"
                    ),
                );
            }
        }
        if let Some(ogg) = &p.ogg {
            if p.format != Format::Ogg {
                problems.add(
                    &["pipelines", name, "ogg"],
                    format!("pipeline `{name}`: `ogg:` applies to `format: ogg` only"),
                );
            }
            if let Err(e) = Zone::parse(&ogg.op_ts_zone) {
                problems.add(
                    &["pipelines", name, "ogg", "op_ts_zone"],
                    format!("pipeline `{name}`: ogg.op_ts_zone: {e}"),
                );
            }
            let t = &ogg.op_types;
            let codes = [&t.insert, &t.update, &t.delete, &t.truncate];
            if codes.iter().any(|c| c.trim().is_empty()) {
                problems.add(
                    &["pipelines", name, "ogg", "op_types"],
                    format!("pipeline `{name}`: an `ogg.op_types` code is empty"),
                );
            }
            for (i, a) in codes.iter().enumerate() {
                if codes[..i].contains(a) {
                    problems.add(
                        &["pipelines", name, "ogg", "op_types"],
                        format!(
                            "pipeline `{name}`: `ogg.op_types` gives code `{a}` to two operations"
                        ),
                    );
                }
            }
        }
        if p.format == Format::Json && p.key.is_empty() {
            problems.add(
                &at("format"),
                format!(
                    "pipeline `{name}`: format `json` needs `key:` (the key columns of the row)"
                ),
            );
        }
        if p.format == Format::Json && p.table.is_some() {
            problems.add(&at("table"), format!("pipeline `{name}`: format `json` carries no table name, so `table:` cannot filter it"));
        }
        if p.unavailable_placeholder.is_some() && !p.format.is_debezium() {
            problems.add(
                &at("unavailable_placeholder"),
                format!("pipeline `{name}`: `unavailable_placeholder` applies to formats debezium and debezium-flat only"),
            );
        }
        if p.unavailable_placeholder.as_deref() == Some("") {
            problems.add(
                &at("unavailable_placeholder"),
                format!("pipeline `{name}`: `unavailable_placeholder` is empty"),
            );
        }
        if matches!(&p.table, Some(t) if t.trim().is_empty()) {
            problems.add(&at("table"), format!("pipeline `{name}`: `table` is empty"));
        }
        for (class, r) in [
            ("dependency", p.retries.dependency),
            ("data", p.retries.data),
        ] {
            if r.attempts == 0 {
                problems.add(
                    &["pipelines", name, "retries", class, "attempts"],
                    format!("pipeline `{name}`: `retries.{class}.attempts` must be at least 1"),
                );
            }
        }
    }

    /// Checks that `name`'s routes are unique and its topics keep one format.
    fn validate_routes<'c>(
        &'c self,
        name: &'c str,
        p: &'c Pipeline,
        routes: &mut Routes<'c>,
        problems: &mut Problems<'_>,
    ) {
        let filter = p.table.as_deref().unwrap_or("").to_lowercase();
        for topic in p.all_topics() {
            if topic.trim().is_empty() {
                problems.add(
                    &["pipelines", name, "topic"],
                    format!("pipeline `{name}` names an empty topic"),
                );
                continue;
            }
            if let Some(other) = routes
                .by_filter
                .insert((topic.to_string(), filter.clone()), name)
            {
                let what = if filter.is_empty() {
                    "every table".to_string()
                } else {
                    format!("table `{filter}`")
                };
                problems.add(
                    &["pipelines", name],
                    format!("pipelines `{other}` and `{name}` both route topic `{topic}` ({what})"),
                );
            }
            match routes.formats.get(topic) {
                Some((f, other)) if *f != p.format => problems.add(
                    &["pipelines", name, "format"],
                    format!(
                        "topic `{topic}` is read as {f:?} by pipeline `{other}` and as {:?} by `{name}`; one topic has one format",
                        p.format
                    ),
                ),
                Some(_) => {}
                None => {
                    routes.formats.insert(topic, (p.format, name));
                }
            }
            // The decoder of a topic is one for all its pipelines.
            match routes.placeholders.get(topic) {
                Some((ph, other)) if *ph != p.unavailable_placeholder.as_deref() => problems.add(
                    &["pipelines", name, "unavailable_placeholder"],
                    format!(
                        "topic `{topic}` has unavailable_placeholder {} in pipeline `{other}` and {} in `{name}`; pipelines sharing a topic need the same",
                        shown(*ph),
                        shown(p.unavailable_placeholder.as_deref())
                    ),
                ),
                Some(_) => {}
                None => {
                    routes
                        .placeholders
                        .insert(topic, (p.unavailable_placeholder.as_deref(), name));
                }
            }
        }
    }

    /// Rules for pipelines that share a topic: tombstones name no table, and
    /// two table filters must not both match one table.
    fn validate_sharing(&self, problems: &mut Vec<String>) {
        let mut per_topic: IndexMap<&str, Vec<(&str, &Pipeline)>> = IndexMap::new();
        for (name, p) in &self.pipelines {
            for t in p.all_topics() {
                per_topic.entry(t).or_default().push((name, p));
            }
        }
        for (name, p) in &self.pipelines {
            if p.tombstones != Tombstones::Deliver {
                continue;
            }
            let at = self.at(&["pipelines", name, "tombstones"]);
            if !p.format.is_debezium() {
                problems.push(format!(
                    "{at}pipeline `{name}`: `tombstones: deliver` applies to Debezium topics only"
                ));
            }
            for t in p.all_topics() {
                if per_topic[t].len() > 1 {
                    problems.push(format!(
                        "{at}pipeline `{name}`: `tombstones: deliver` needs topic `{t}` to itself (a tombstone names no table to route by)"
                    ));
                }
            }
        }
        for (topic, users) in &per_topic {
            if let Some((first, pf)) = users.first()
                && let Some((other, _)) = users.iter().find(|(_, p)| p.ogg != pf.ogg)
            {
                problems.push(format!(
                    "{}pipelines `{first}` and `{other}` read topic `{topic}` with different `ogg:` settings; one topic is written one way",
                    self.at(&["pipelines", other, "ogg"])
                ));
            }
            for (a, pa) in users {
                for (b, pb) in users {
                    let (Some(fa), Some(fb)) = (&pa.table, &pb.table) else {
                        continue;
                    };
                    let (fa, fb) = (fa.to_lowercase(), fb.to_lowercase());
                    if !fa.contains('.')
                        && fb.contains('.')
                        && fb.rsplit('.').next() == Some(fa.as_str())
                    {
                        problems.push(format!(
                            "{}pipelines `{a}` (`{fa}`) and `{b}` (`{fb}`) both take table `{fb}` on topic `{topic}`; qualify both or neither",
                            self.at(&["pipelines", b, "table"])
                        ));
                    }
                }
            }
        }
    }
}

/// Problems found so far, each prefixed with `file:line: `.
struct Problems<'c> {
    config: &'c Config,
    list: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, path: &[&str], msg: String) {
        self.list.push(format!("{}{msg}", self.config.at(path)));
    }
}

/// (topic, table filter) → the first pipeline routing it; topic → its format.
#[derive(Default)]
struct Routes<'c> {
    by_filter: HashMap<(String, String), &'c str>,
    formats: HashMap<&'c str, (Format, &'c str)>,
    placeholders: HashMap<&'c str, (Option<&'c str>, &'c str)>,
}

fn shown(placeholder: Option<&str>) -> String {
    match placeholder {
        Some(p) => format!("`{p}`"),
        None => "unset".into(),
    }
}

const IDENT_RULE: &str = "lower-case letters, digits and `_`, each part at most 63 bytes";

/// Options whose value pgchain's delivery guarantee relies on.
const MANAGED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
];

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn valid_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `schema.procedure`, each an unquoted lower-case PostgreSQL identifier.
pub fn valid_step_name(step: &str) -> bool {
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    matches!(step.split_once('.'), Some((schema, proc)) if ident(schema) && ident(proc))
}
