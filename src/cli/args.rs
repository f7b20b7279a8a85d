//! Command-line arguments the library takes as plain structs: clap lives in
//! the binary only.

use std::path::PathBuf;
use std::time::Duration;

/// Which dead letters a command takes; every filter narrows.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only these ids (repeat, or separate with commas).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<i64>,
    #[arg(long)]
    pub pipeline: Option<String>,
    /// parked, dead, replayed or discarded (replay and discard take parked
    /// or dead only).
    #[arg(long)]
    pub status: Option<String>,
    /// First failed longer ago than this (e.g. 30m, 2h).
    #[arg(long, value_parser = pgchain::config::parse_duration)]
    pub older_than: Option<Duration>,
}

impl From<FilterArgs> for pgchain::dlq::Filter {
    fn from(a: FilterArgs) -> Self {
        pgchain::dlq::Filter {
            ids: a.ids,
            pipeline: a.pipeline,
            status: a.status,
            older_than: a.older_than,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The source database URL (any PostgreSQL).
    #[arg(long)]
    pub source: String,
    /// The source table, `schema.table`.
    #[arg(long)]
    pub table: String,
    /// The target table (its raw copy), `schema.table`, in postgres.url of
    /// the config (or --target-url).
    #[arg(long)]
    pub target: String,
    /// Key columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub key: Vec<String>,
    /// Columns to compare besides the key (default: every column both
    /// tables have, except the target's own `_`-prefixed bookkeeping).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    #[arg(short, long, default_value = "pipelines.yaml")]
    pub config: PathBuf,
    /// The target database; defaults to postgres.url of the config.
    #[arg(long)]
    pub target_url: Option<String>,
    /// Re-emit missing, extra and changed keys through the pipeline.
    #[arg(long)]
    pub repair: bool,
    /// The pipeline to re-emit through (default: the only one, or the one
    /// whose table filter names --table).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Largest range whose (key, hash) pairs are fetched and compared here.
    #[arg(long, default_value_t = 2000)]
    pub leaf_rows: i64,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl From<VerifyArgs> for pgchain::verify::VerifyArgs {
    fn from(a: VerifyArgs) -> Self {
        pgchain::verify::VerifyArgs {
            source: a.source,
            table: a.table,
            target: a.target,
            key: a.key,
            columns: a.columns,
            config: a.config,
            target_url: a.target_url,
            repair: a.repair,
            pipeline: a.pipeline,
            leaf_rows: a.leaf_rows,
            json: a.json,
        }
    }
}

/// `pgchain bench`: the contenders share these; `--verify-rows`,
/// `--identity`, `--quality` and `--avro` each run another benchmark instead.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events to run through each contender.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Partitions of the bench topic (and connections of the parallel direct run).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Distinct row keys the events update.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// postgres.max_batch of the batched run (the other run uses 1).
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value_t = pgchain::config::default_url()
    )]
    pub database_url: String,
    #[arg(long, default_value = "pgchain_bench")]
    pub database: String,
    #[arg(long, default_value = "sql/migrations")]
    pub migrations: std::path::PathBuf,
    /// Instead: time `pgchain verify` on this many rows with 100 scattered
    /// differences (two databases on the server).
    #[arg(long)]
    pub verify_rows: Option<i64>,
    /// Instead: identity resolution of the customer example at this many
    /// union records (initial build, then single change events).
    #[arg(long)]
    pub identity: Option<i64>,
    /// Instead: Avro through a schema registry (decoding alone against
    /// Debezium JSON with the inline schema, then end to end).
    #[arg(long)]
    pub avro: bool,
    /// Instead: pairwise precision, recall and F1 of the people example's
    /// identity rules on this many generated people with known truth
    /// (migrations from examples/people/sql/migrations).
    #[arg(long)]
    pub quality: Option<usize>,
    /// Seed of the --quality generator: other people, the same noise.
    #[arg(long, default_value_t = 2026)]
    pub quality_seed: u64,
    /// Change events of the --identity run.
    #[arg(long, default_value_t = 20_000)]
    pub identity_events: usize,
}
