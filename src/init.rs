//! `pgchain init`: a new project folder, holding only the user's own files.
//!
//! pgchain's runtime and built-in templates ship inside the binary, so a
//! project is its `pipelines.yaml`, its own migrations and its own templates.

use crate::embedded::{EXAMPLE_BLANK, EXAMPLE_CAMPAIGN, EXAMPLE_CUSTOMER};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// What a new project starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// One pipeline, one raw-copy procedure to render: the smallest start.
    Blank,
    /// Three sources → L0 → cleansed union → identity → golden record → outbox.
    Customer,
    /// A base table and side tables on separate topics joined into one row.
    Campaign,
}

impl std::str::FromStr for Example {
    type Err = String;

    fn from_str(s: &str) -> Result<Example, String> {
        match s {
            "blank" => Ok(Example::Blank),
            "customer" => Ok(Example::Customer),
            "campaign" => Ok(Example::Campaign),
            other => Err(format!(
                "unknown example `{other}`: blank, customer or campaign"
            )),
        }
    }
}

impl Example {
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Example::Blank => EXAMPLE_BLANK,
            Example::Customer => EXAMPLE_CUSTOMER,
            Example::Campaign => EXAMPLE_CAMPAIGN,
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Example::Blank => {
                "One Debezium topic copied raw into `l0.customer` by the built-in `l0_upsert` template."
            }
            Example::Customer => {
                "The customer example: three source systems → L0 raw copies → a cleansed member union → identity clusters → one golden record per person → an outbox."
            }
            Example::Campaign => {
                "The campaign example: a member table and its consent and terms side tables, on separate topics, consolidated into one target row per member; side rows that arrive before their member are parked and re-driven."
            }
        }
    }
}

/// Writes a new project into `dir` (created if missing; it must be empty).
/// Returns the files written, relative to `dir`.
pub fn init(dir: &Path, example: Example) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            anyhow::bail!(
                "{} exists and is not empty; pgchain init never overwrites: choose a new folder",
                dir.display()
            );
        }
    }
    let mut files: Vec<(String, String)> = example
        .files()
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    files.push(("README.md".into(), readme(dir, example)));
    files.push(("sql/templates/README.md".into(), TEMPLATES_README.into()));
    std::fs::create_dir_all(dir.join("sql/migrations"))
        .and_then(|()| std::fs::create_dir_all(dir.join("sql/templates")))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // create_new: never overwrite, even a file that appeared meanwhile.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        written.push(PathBuf::from(rel));
    }
    Ok(written)
}

fn readme(dir: &Path, example: Example) -> String {
    let name = dir.file_name().map_or("pgchain project".to_string(), |n| {
        n.to_string_lossy().to_string()
    });
    format!(
        "# {name}

{}

A pgchain project: `pipelines.yaml` wires Kafka topics to chains of
PostgreSQL procedures; `sql/migrations/` holds this project's own migrations
(refinery, `V{{n}}__{{name}}.sql`: what `pgchain render` writes, and any you
write by hand; an applied file is never edited, add a new version);
`sql/templates/` holds its own templates.
pgchain's runtime (ledger, chain runner, dead letters, normalisers) and its
built-in templates come with the pgchain binary.

## The loop

```sh
$EDITOR pipelines.yaml                 # pipelines, and procedures rendered from templates
pgchain render                         # new V{{n}} files in sql/migrations where a procedure changed
pgchain migrate                        # pgchain's runtime, then sql/migrations
pgchain check                          # the file, and every step in the database
pgchain run                            # until SIGTERM; `--until-drained` for a backfill
```

Every command takes `-c path/to/pipelines.yaml` (default `./pipelines.yaml`);
relative paths resolve against that file's folder. The database is
`postgres.url` (or `$DATABASE_URL`), the brokers `kafka.brokers` (or
`$KAFKA_BROKERS`).

`pgchain render --list-templates` shows which templates there are and which
file serves each. `refinery migrate -e DATABASE_URL -p sql/migrations` applies
this project's folder alone, once `pgchain migrate` has installed the runtime.
",
        example.summary()
    )
}

const TEMPLATES_README: &str =
    "Your own minijinja templates, `{name}.sql.j2`, named by `template:` in
pipelines.yaml. One named like a built-in template (`l0_upsert`, …)
overrides it; `pgchain render --list-templates` shows which file serves each.
Every `{{ … }}` writes SQL: a variable goes through `ident`, `qualified`,
`literal`, `comment`, `sqltype` or `expr`; a bare string is a render error.
";
