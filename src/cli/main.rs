//! The `pgchain` command line: parse, set up logging and shutdown, call the
//! library. The demo and the benchmarks (feature `tools`) live here too: they
//! drive the service library from outside, as a user's program would.

mod args;
#[cfg(feature = "tools")]
mod avro_bench;
#[cfg(feature = "tools")]
mod bench;
#[cfg(feature = "tools")]
mod demo;
#[cfg(feature = "tools")]
mod identity_bench;
#[cfg(feature = "tools")]
mod measure;
#[cfg(feature = "tools")]
mod quality_bench;

use args::{FilterArgs, VerifyArgs};

use clap::{Parser, Subcommand, ValueEnum};
use pgchain::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgchain",
    version,
    about = "Runs chains of PostgreSQL procedures for CDC events on Kafka"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "PGCHAIN_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters of the config's consumer group, oldest first.
    List {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run parked or dead events through their chain again, in order.
    Replay {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        /// Every parked and dead event.
        #[arg(long)]
        all: bool,
    },
    /// Mark parked or dead events discarded; the reason is kept.
    Discard {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Why two records are one entity (every hop: rule, matched values,
    /// other rules, when), or with one record, every link of its cluster.
    Explain {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        /// The identity_link procedure whose graph to ask (needed when the
        /// config has several).
        #[arg(long)]
        procedure: Option<String>,
        /// A record, as system:source_key.
        record: pgchain::identity::RecordRef,
        /// A second record: explain the links between the two.
        other: Option<pgchain::identity::RecordRef>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Link two records by hand (kept in the graph's overrides with who and
    /// why; honoured per event and by rebuild) and update their golden records.
    MustLink {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
        record: pgchain::identity::RecordRef,
        other: pgchain::identity::RecordRef,
        /// Who makes the override.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        why: String,
    },
    /// Keep two records apart whatever they share (kept in the graph's
    /// overrides with who and why; honoured per event and by rebuild): their
    /// cluster is cut by the constrained union and golden records updated.
    CannotLink {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
        record: pgchain::identity::RecordRef,
        other: pgchain::identity::RecordRef,
        /// Who makes the override.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        why: String,
    },
    /// Revoke an override by its id: its records are re-linked without it.
    Revoke {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// After review: let a generic value link again, for good, or with a
    /// record (system:source_key), let its link that max_cluster_size held.
    Release {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
        /// The record whose held link to release.
        record: Option<pgchain::identity::RecordRef>,
        #[arg(long)]
        rule: String,
        /// The key value as the graph keeps it (see explain).
        #[arg(long)]
        value: String,
        #[arg(long)]
        by: String,
        /// Why (required for a generic value).
        #[arg(long)]
        why: Option<String>,
    },
    /// Re-link every record after a change of rules, while pipelines run:
    /// rebuild, then golden records and the outbox, in one transaction
    /// (running link steps wait for it, then go on). Cluster ids stay.
    Relink {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
    },
    /// Propose weights for a scored rule's levels from the data
    /// (Fellegi-Sunter): m from pairs sharing a value of an exact rule taken
    /// as the truth, u from random pairs in different clusters. Prints the
    /// estimate and the rule's `compare` block to review; --out writes the
    /// block to a file.
    Estimate {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        #[arg(long)]
        procedure: Option<String>,
        /// The scored rule.
        #[arg(long)]
        rule: String,
        /// The exact rule whose shared values mark one person (default: the
        /// first exact rule).
        #[arg(long)]
        truth: Option<String>,
        /// How many random pairs (and at most how many truth pairs).
        #[arg(long, default_value_t = 20_000)]
        pairs: i64,
        /// Write the `compare` block here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Write a new project: pipelines.yaml, sql/migrations, sql/templates, README.
    Init {
        /// The project's folder (created; must be new or empty).
        dir: PathBuf,
        /// What it starts from: blank, customer or campaign.
        #[arg(long, default_value = "blank", value_parser = parse_example)]
        example: pgchain::init::Example,
    },
    /// Run the dispatcher until SIGINT or SIGTERM.
    Run {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        /// Exit 0 once every partition has been applied up to the high
        /// watermark seen at start (a backfill, a test, a benchmark).
        #[arg(long)]
        until_drained: bool,
        /// Start even when `pgchain check` finds the database lacking (a
        /// step or pgchain's runtime not migrated); events then wait.
        #[arg(long)]
        no_check: bool,
    },
    /// Validate pipelines.yaml, the database it names (unless --no-db), its
    /// Kafka brokers (unless --no-kafka) and its schema registry.
    Check {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        /// Do not connect to the database.
        #[arg(long)]
        no_db: bool,
        /// Do not connect to the Kafka brokers.
        #[arg(long)]
        no_kafka: bool,
        /// How long the brokers may take to answer.
        #[arg(long, default_value = "10s", value_parser = pgchain::config::parse_duration)]
        kafka_timeout: std::time::Duration,
    },
    /// Applied position, lag and last applied time of every partition.
    Status {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply pgchain's runtime, then the project's sql/migrations (beside the config file).
    Migrate {
        /// Database URL; defaults to postgres.url of the config file.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
    },
    /// Render `procedures:` from templates into new migrations where they changed.
    Render {
        #[arg(short, long, default_value = "pipelines.yaml")]
        config: PathBuf,
        /// Write nothing; fail if a procedure changed without a new migration.
        #[arg(long)]
        check: bool,
        /// List the templates a procedure can name and the file serving each.
        #[arg(long)]
        list_templates: bool,
    },
    /// Dead letters: list, replay or discard.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// A data steward's questions to an identity graph.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Compare a source table with its copy by key; --repair re-emits the differences.
    Verify(VerifyArgs),
    /// The whole flow on an embedded Kafka and the local PostgreSQL.
    #[cfg(feature = "tools")]
    Demo(demo::DemoArgs),
    /// Throughput and latency, against the direct-SQL limit.
    #[cfg(feature = "tools")]
    Bench(args::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(dispatch(cli.command));
    // A broker question still waiting on a blocking thread (a start-up
    // stopped by a signal) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init { dir, example } => {
            let written = pgchain::init::init(&dir, example)?;
            for f in &written {
                println!("wrote {}", dir.join(f).display());
            }
            println!(
                "next: cd {} && pgchain render && pgchain migrate && pgchain check && pgchain run",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            until_drained,
            no_check,
        } => {
            let config = load(&config)?;
            if !no_check {
                preflight(&config).await?;
            }
            let dispatcher = pgchain::dispatcher::Dispatcher::new(config)?;
            if until_drained {
                let drained = dispatcher.run_until_drained(shutdown_signal()).await?;
                print!("{drained}");
            } else {
                dispatcher.run(shutdown_signal()).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            no_db,
            no_kafka,
            kafka_timeout,
        } => check(&config, no_db, (!no_kafka).then_some(kafka_timeout)).await,
        Command::Status { config, json } => {
            let rows = pgchain::ops::status::collect(&load(&config)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", pgchain::ops::status::table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            database_url,
            config,
        } => {
            let config = load(&config)?;
            let url = database_url.unwrap_or_else(|| config.postgres.url.clone());
            let dir = config.migrations_dir();
            let done = pgchain::db::migrate(&url, &dir).await?;
            let runtime = &done.runtime;
            if !runtime.adopted.is_empty() {
                println!(
                    "adopted pgchain's runtime from the project's migrations {}: it is built into pgchain now",
                    runtime.adopted.join(", ")
                );
            }
            println!(
                "pgchain runtime: {}",
                if runtime.applied.is_empty() {
                    "up to date".to_string()
                } else {
                    format!("applied {} file(s)", runtime.applied.len())
                }
            );
            println!(
                "{}: applied {} migration(s){}",
                dir.display(),
                done.applied.len(),
                list(&done.applied)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            config,
            check,
            list_templates,
        } => {
            if list_templates {
                let config = load(&config)?;
                let sources = pgchain::render::Sources::new(&config.templates_dir());
                for (name, source) in sources.list() {
                    match source {
                        pgchain::render::TemplateSource::Project(p) => {
                            let over = if pgchain::embedded::template(&name).is_some() {
                                " (overrides the built-in)"
                            } else {
                                ""
                            };
                            println!("{name:<20} {}{over}", p.display());
                        }
                        pgchain::render::TemplateSource::BuiltIn => {
                            println!("{name:<20} built in")
                        }
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            render(&config, check)
        }
        Command::Dlq { command } => dlq(command).await,
        Command::Identity { command } => identity(command).await,
        Command::Verify(args) => {
            let args = pgchain::verify::VerifyArgs::from(args);
            let config = load(&args.config)?;
            let report = pgchain::verify::run(&args, &config).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", pgchain::verify::text(&report, 20));
            }
            Ok(if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        #[cfg(feature = "tools")]
        Command::Demo(args) => demo::run(args).await.map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "tools")]
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List {
            config,
            filter,
            json,
        } => {
            let entries = pgchain::dlq::list(&load(&config)?, &filter.into()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", pgchain::dlq::table(&entries));
            }
        }
        DlqCommand::Replay {
            config,
            filter,
            all,
        } => {
            let r = pgchain::dlq::replay(&load(&config)?, &filter.into(), all).await?;
            println!(
                "replayed {}; still parked {}; still dead {}; waiting behind a parked event {}; gone meanwhile {}",
                r.replayed, r.still_parked, r.still_dead, r.behind, r.gone
            );
            if r.still_parked + r.still_dead + r.behind > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Discard {
            config,
            filter,
            all,
            reason,
        } => {
            let ids = pgchain::dlq::discard(&load(&config)?, &filter.into(), all, &reason).await?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            println!("discarded {}{}", ids.len(), list(&ids));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn identity(command: IdentityCommand) -> anyhow::Result<ExitCode> {
    match command {
        IdentityCommand::Explain {
            config,
            procedure,
            record,
            other,
            json,
        } => {
            let (schema, client) = graph(&config, procedure.as_deref()).await?;
            match other {
                Some(other) => {
                    let hops =
                        pgchain::identity::explain(&client, &schema, &record, &other).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&hops)?);
                    } else if hops.is_empty() {
                        println!(
                            "{}:{} and {}:{} are not linked",
                            record.system, record.source_key, other.system, other.source_key
                        );
                    } else {
                        print!("{}", pgchain::identity::hops_table(&hops));
                    }
                }
                None => {
                    let links =
                        pgchain::identity::explain_cluster(&client, &schema, &record).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&links)?);
                    } else if let Some(first) = links.first() {
                        println!("cluster {}", first.cluster_id);
                        print!("{}", pgchain::identity::links_table(&links));
                    } else {
                        println!(
                            "{}:{} has no links in {schema}",
                            record.system, record.source_key
                        );
                    }
                }
            }
        }
        IdentityCommand::MustLink {
            config,
            procedure,
            record,
            other,
            by,
            why,
        } => {
            let action = pgchain::identity::Action::MustLink {
                a: &record,
                b: &other,
                by: &by,
                why: &why,
            };
            steward(&config, procedure.as_deref(), action).await?;
        }
        IdentityCommand::CannotLink {
            config,
            procedure,
            record,
            other,
            by,
            why,
        } => {
            let action = pgchain::identity::Action::CannotLink {
                a: &record,
                b: &other,
                by: &by,
                why: &why,
            };
            steward(&config, procedure.as_deref(), action).await?;
        }
        IdentityCommand::Revoke {
            config,
            procedure,
            id,
            by,
        } => {
            let action = pgchain::identity::Action::Revoke { id, by: &by };
            steward(&config, procedure.as_deref(), action).await?;
        }
        IdentityCommand::Release {
            config,
            procedure,
            record,
            rule,
            value,
            by,
            why,
        } => {
            let action = match &record {
                Some(record) => pgchain::identity::Action::ReleaseHeld {
                    record,
                    rule: &rule,
                    value: &value,
                    by: &by,
                },
                None => pgchain::identity::Action::ReleaseValue {
                    rule: &rule,
                    value: &value,
                    by: &by,
                    why: why.as_deref().unwrap_or(""),
                },
            };
            steward(&config, procedure.as_deref(), action).await?;
        }
        IdentityCommand::Relink { config, procedure } => {
            let (schema, client) = graph(&config, procedure.as_deref()).await?;
            let t = std::time::Instant::now();
            let (records, clusters) = pgchain::identity::relink_all(&client, &schema).await?;
            println!(
                "{schema}: {records} records re-linked into {clusters} clusters in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        IdentityCommand::Estimate {
            config,
            procedure,
            rule,
            truth,
            pairs,
            out,
        } => {
            let config = load(&config)?;
            let (_, spec) = pgchain::identity::graph(&config, procedure.as_deref())?;
            let schema = pgchain::identity::graph_schema(&config, procedure.as_deref())?;
            let client = pgchain::db::connect(&config.postgres.url).await?;
            let est =
                pgchain::identity::estimate(&client, &schema, spec, &rule, truth.as_deref(), pairs)
                    .await?;
            print!("{}", est.table());
            match out {
                Some(path) => {
                    std::fs::write(&path, est.yaml()?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    println!("wrote {} for review", path.display());
                }
                None => print!("{}", est.yaml()?),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The identity graph of the config (its schema) and a connection to it.
async fn graph(
    config: &std::path::Path,
    procedure: Option<&str>,
) -> anyhow::Result<(String, tokio_postgres::Client)> {
    let config = load(config)?;
    let schema = pgchain::identity::graph_schema(&config, procedure)?;
    let client = pgchain::db::connect(&config.postgres.url).await?;
    Ok((schema, client))
}

/// Runs a steward's action on the config's identity graph and prints its answer.
async fn steward(
    config: &std::path::Path,
    procedure: Option<&str>,
    action: pgchain::identity::Action<'_>,
) -> anyhow::Result<()> {
    let (schema, client) = graph(config, procedure).await?;
    let out = pgchain::identity::steward(&client, &schema, action).await?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What `check` finds before `run`: a missing step or runtime refuses the
/// start (every event would wait for it). A database that does not answer
/// yet does not: the chains wait for it as for any transient error.
async fn preflight(config: &Config) -> anyhow::Result<()> {
    let client = match pgchain::db::connect(&config.postgres.url).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot check the database before starting ({e}); starting anyway");
            return Ok(());
        }
    };
    let problems = pgchain::db::check(config, &client).await?;
    if problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "not starting: {}\n{}\n(run `pgchain migrate`; `pgchain run --no-check` starts anyway, and events wait for what is missing)",
        config.path.display(),
        problems.join("\n")
    )
}

async fn check(
    path: &std::path::Path,
    no_db: bool,
    kafka: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                println!("{p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = if no_db {
        Vec::new()
    } else {
        let client = pgchain::db::connect(&config.postgres.url).await?;
        pgchain::db::check(&config, &client).await?
    };
    if let Some(timeout) = kafka {
        problems.extend(check_kafka(&config, timeout).await?);
    }
    if let Some(settings) = &config.schema_registry {
        let registry = pgchain::registry::Registry::new(settings);
        match registry.probe().await {
            Ok(types) => println!(
                "schema registry: answered at {} (schema types: {})",
                settings.url.trim(),
                types.join(", ")
            ),
            Err(why) => problems.push(format!(
                "{}schema registry {}: {why}",
                config.at(&["schema_registry", "url"]),
                settings.url.trim()
            )),
        }
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!(
            "{}: {} pipeline(s) ok",
            path.display(),
            config.pipelines.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Asks the brokers; prints what is fine or only worth a warning, returns
/// the problems, each naming the config line.
async fn check_kafka(config: &Config, timeout: std::time::Duration) -> anyhow::Result<Vec<String>> {
    let key: &[&str] = if config.kafka.provider.is_some() {
        &["kafka", "provider"]
    } else {
        &["kafka", "brokers"]
    };
    let at = config.at(key);
    let (cluster, topics) = (config.cluster(), config.topics());
    let reached = tokio::task::spawn_blocking(move || {
        pgchain::kafka::probe::reach(&cluster, &topics, timeout)
    })
    .await?;
    let brokers = &config.kafka.brokers;
    let reached = match reached {
        Ok(r) => r,
        Err(why) => {
            return Ok(vec![format!(
                "{at}cannot reach the Kafka brokers {brokers}: {why}"
            )]);
        }
    };
    println!("kafka: {} broker(s) answered at {brokers}", reached.brokers);
    let prefix = config.prefix();
    let mut problems = Vec::new();
    for (topic, problem) in reached.topics {
        let wire = prefix.wire(&topic);
        let named = if wire == topic {
            format!("`{topic}`")
        } else {
            format!("`{topic}` (`{wire}` on the brokers)")
        };
        match problem {
            None => {}
            Some(pgchain::kafka::probe::TopicProblem::Missing) => {
                println!("warning: topic {named} does not exist yet; `run` waits for it")
            }
            Some(pgchain::kafka::probe::TopicProblem::Refused(why)) => problems.push(format!(
                "{}topic {named}: the brokers refuse it: {why}",
                config.at(&["kafka", "prefix"])
            )),
        }
    }
    for line in schemaless_warnings(config).await? {
        println!("{line}");
    }
    Ok(problems)
}

/// Debezium topics whose newest message comes without the inline schema,
/// feeding an `l0_upsert`/`sink_upsert` column whose cast would fail on
/// Debezium's raw encoding: one warning per column, naming the fix.
async fn schemaless_warnings(config: &Config) -> anyhow::Result<Vec<String>> {
    use pgchain::decode::debezium::{has_inline_schema, schemaless_trouble};
    let mut out = Vec::new();
    for (name, p) in &config.pipelines {
        if p.format != pgchain::config::Format::Debezium {
            continue;
        }
        // (procedure, column, type, what arrives, the fix)
        let mut typed = Vec::new();
        for step in &p.chain {
            let Some(spec) = config.procedures.get(step) else {
                continue;
            };
            if !matches!(spec.template.as_str(), "l0_upsert" | "sink_upsert") {
                continue;
            }
            let Some(columns) = spec.vars.get("columns").and_then(|c| c.as_mapping()) else {
                continue;
            };
            for (c, t) in columns {
                if let (Some(c), Some(t)) = (c.as_str(), t.as_str())
                    && let Some((arrives, fix)) = schemaless_trouble(t)
                {
                    typed.push((step.clone(), c.to_string(), t.to_string(), arrives, fix));
                }
            }
        }
        if typed.is_empty() {
            continue;
        }
        for topic in p.all_topics() {
            let (cluster, t) = (config.cluster(), topic.to_string());
            let newest = tokio::task::spawn_blocking(move || {
                pgchain::kafka::probe::newest_value(&cluster, &t, std::time::Duration::from_secs(5))
            })
            .await?;
            let Some(value) = newest else { continue };
            // Avro and JSON Schema from a schema registry carry their types.
            if has_inline_schema(&value) || pgchain::registry::wire_id(&value).is_some() {
                continue;
            }
            for (step, column, ty, arrives, fix) in &typed {
                let fix = match fix {
                    Some(f) => format!("set `{f}` on the connector, or "),
                    None => String::new(),
                };
                out.push(format!(
                    "{}warning: pipeline `{name}`: topic `{topic}` carries Debezium JSON without its inline schema, so column `{column}` ({ty}) of {step} would get {arrives} and its cast would fail; {fix}keep the converter's `schemas.enable=true` (pgchain decodes the types from it)",
                    config.at(&["procedures", step, "vars", "columns"])
                ));
            }
        }
    }
    Ok(out)
}

fn render(config: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let migrations = &config.migrations_dir();
    let rendered = match pgchain::render::render_all(&config, &config.templates_dir(), migrations) {
        Ok(r) => r,
        Err(problems) => {
            for p in problems {
                println!("{p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let changed: Vec<_> = rendered.iter().filter(|r| r.changed).collect();
    if check {
        for r in &changed {
            match &r.latest {
                Some(path) => println!(
                    "{}: the template `{}` or its variables changed since {}; run `pgchain render`",
                    r.procedure,
                    r.template,
                    path.display()
                ),
                None => println!("{}: never rendered; run `pgchain render`", r.procedure),
            }
        }
        if changed.is_empty() {
            println!("{} procedure(s) up to date", rendered.len());
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(ExitCode::FAILURE);
    }
    let written =
        pgchain::render::write_changed(&rendered, migrations).map_err(|e| anyhow::anyhow!(e))?;
    for (path, r) in written.iter().zip(changed) {
        println!("wrote {} ({})", path.display(), r.procedure);
    }
    if written.is_empty() {
        println!(
            "{} procedure(s) up to date; nothing written",
            rendered.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_example(s: &str) -> Result<pgchain::init::Example, String> {
    s.parse()
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

/// Resolves on SIGINT or SIGTERM.
/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when it is first awaited, so a signal during start-up (before
/// the dispatcher awaits it) is caught and ends the run cleanly, exit 0.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
