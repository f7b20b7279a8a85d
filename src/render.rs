//! `pgchain render`: stage procedures from templates into versioned migrations.
//!
//! Each entry of `procedures:` in pipelines.yaml names a template and its
//! variables: the project's own in `sql/templates/`, else the built-in one of
//! that name (shipped inside the binary; a project's template overrides it). Rendering is strict (an undefined
//! variable is an error) and deterministic. A rendered migration starts with a
//! header line naming its procedure, so the folder itself tells the latest
//! rendered version of every procedure. A new `V{n}__{name}.sql` is written only
//! when the output differs from that version; an existing file is never
//! rewritten or renumbered (refinery rejects a changed applied migration).

use crate::config::{Config, ProcedureSpec};
use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HEADER: &str = "-- pgchain render:";

/// One procedure's rendered SQL and where it stands in the folder.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub procedure: String,
    pub template: String,
    pub sql: String,
    /// The latest migration rendered for this procedure, if any.
    pub latest: Option<PathBuf>,
    /// True when `sql` differs from `latest` (or there is none).
    pub changed: bool,
}

/// A migration file of the folder: its version and, if rendered, for which procedure.
struct Existing {
    version: u64,
    path: PathBuf,
    procedure: Option<String>,
}

/// Renders every procedure of `config`. Returns every problem at once.
pub fn render_all(
    config: &Config,
    templates: &Path,
    migrations: &Path,
) -> Result<Vec<Rendered>, Vec<String>> {
    let env = environment(templates);
    let sources = Sources::new(templates);
    let existing = scan(migrations).map_err(|e| vec![e])?;
    let mut latest: BTreeMap<&str, &Existing> = BTreeMap::new();
    for e in &existing {
        if let Some(p) = &e.procedure
            && latest.get(p.as_str()).is_none_or(|l| l.version < e.version)
        {
            latest.insert(p, e);
        }
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, spec) in &config.procedures {
        match render_one(&env, &sources, name, spec) {
            Ok(sql) => {
                let prev = latest.get(name.as_str()).map(|e| e.path.clone());
                let changed = match &prev {
                    Some(path) => std::fs::read_to_string(path)
                        .map(|old| old != sql)
                        .unwrap_or(true),
                    None => true,
                };
                out.push(Rendered {
                    procedure: name.clone(),
                    template: spec.template.clone(),
                    sql,
                    latest: prev,
                    changed,
                });
            }
            Err(e) => problems.push(format!(
                "{}procedure `{name}`: {e}",
                config.at(&["procedures", name])
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Writes a new migration for every changed procedure, numbered after the
/// highest version in the folder, in declaration order. Returns the paths.
pub fn write_changed(rendered: &[Rendered], migrations: &Path) -> Result<Vec<PathBuf>, String> {
    let first = scan(migrations)?
        .iter()
        .map(|e| e.version)
        .max()
        .unwrap_or(0)
        + 1;
    let mut written = Vec::new();
    for (next, r) in (first..).zip(rendered.iter().filter(|r| r.changed)) {
        let path = migrations.join(format!("V{next}__{}.sql", r.procedure.replace('.', "_")));
        // create_new: never overwrite, even if a file appeared meanwhile.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, r.sql.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn render_one(
    env: &Environment<'_>,
    sources: &Sources,
    name: &str,
    spec: &ProcedureSpec,
) -> Result<String, String> {
    let template = env
        .get_template(&format!("{}.sql.j2", spec.template))
        .map_err(|e| match e.kind() {
            minijinja::ErrorKind::TemplateNotFound => format!(
                "template `{}` is neither in {} nor built in (built in: {})",
                spec.template,
                sources.dir.display(),
                crate::embedded::template_names().join(", ")
            ),
            _ => format!(
                "template `{}`: {}",
                spec.template,
                sources.describe(env, &e, &[])
            ),
        })?;
    let (schema, proc) = name.split_once('.').unwrap_or(("", name));
    let mut ctx: BTreeMap<String, Value> = spec
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(minijinja::value::Serde(v))))
        .collect();
    ctx.insert("procedure".into(), Value::from(quote_qualified(name)));
    ctx.insert("procedure_schema".into(), Value::from(schema));
    ctx.insert("procedure_name".into(), Value::from(proc));
    let body = template
        .render(Value::from(minijinja::value::Serde(&ctx)))
        .map_err(|e| {
            let mut missing: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !ctx.contains_key(v) && env.globals().all(|(g, _)| g != v))
                .collect();
            missing.sort();
            sources.describe(env, &e, &missing)
        })?;
    Ok(format!(
        "{HEADER} {name} (template {})\n-- Written by `pgchain render`; change the template or its variables in pipelines.yaml, never this file.\n\n{}\n",
        spec.template,
        body.trim()
    ))
}

/// Where templates come from: the project's folder first, then the built-ins.
pub struct Sources {
    pub dir: PathBuf,
}

/// Which file a template name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// The project's own file, overriding any built-in of the same name.
    Project(PathBuf),
    /// Shipped inside the binary.
    BuiltIn,
}

impl Sources {
    pub fn new(dir: &Path) -> Sources {
        Sources {
            dir: dir.to_path_buf(),
        }
    }

    /// Where template file `file` (`l0_upsert.sql.j2`) comes from, if anywhere.
    pub fn find(&self, file: &str) -> Option<TemplateSource> {
        let path = self.dir.join(file);
        if path.is_file() {
            Some(TemplateSource::Project(path))
        } else {
            let name = file.strip_suffix(".sql.j2")?;
            crate::embedded::template(name).map(|_| TemplateSource::BuiltIn)
        }
    }

    /// Every template a project can name, with the file that serves it.
    pub fn list(&self) -> Vec<(String, TemplateSource)> {
        let mut names: Vec<String> = crate::embedded::template_names()
            .into_iter()
            .map(String::from)
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().to_string();
                if let Some(n) = file.strip_suffix(".sql.j2")
                    && !n.starts_with('_')
                {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| {
                let src = self.find(&format!("{n}.sql.j2"))?;
                Some((n, src))
            })
            .collect()
    }

    /// A minijinja error with its template file and line; for an undefined
    /// value, the variable (`missing`: variables the template reads that the
    /// procedure's vars do not set) or the expression that was undefined.
    fn describe(&self, env: &Environment<'_>, e: &minijinja::Error, missing: &[String]) -> String {
        let place = e.name().map(|name| match self.find(name) {
            Some(TemplateSource::Project(p)) => p.display().to_string(),
            _ => format!("built-in template {name}"),
        });
        let mut msg = match (place, e.line()) {
            (Some(place), Some(line)) => format!("{place}:{line}: {}", e.kind()),
            (Some(place), None) => format!("{place}: {}", e.kind()),
            _ => e.kind().to_string(),
        };
        let detail = e.detail().map(str::to_string);
        if e.kind() != minijinja::ErrorKind::UndefinedError {
            if let Some(d) = detail {
                msg.push_str(&format!(": {d}"));
            }
            return msg;
        }
        // The variables the procedure does not set that the error or the
        // expression names (optional ones, tested with `is defined`, are
        // among `missing` too, so only a named one counts).
        let expr = expression(env, e);
        let hint = format!(
            "{} {}",
            detail.as_deref().unwrap_or(""),
            expr.as_deref().unwrap_or("")
        );
        let named: Vec<String> = missing
            .iter()
            .filter(|v| mentions(&hint, v))
            .map(|v| format!("`{v}`"))
            .collect();
        match (named.len(), detail, expr) {
            (0, Some(d), _) => msg.push_str(&format!(": {d}")),
            (0, None, Some(x)) => msg.push_str(&format!(": `{x}` is undefined")),
            (0, None, None) => {}
            (1, ..) => msg.push_str(&format!(
                ": {} is not set in the procedure's vars",
                named[0]
            )),
            _ => msg.push_str(&format!(
                ": {} are not set in the procedure's vars",
                named.join(", ")
            )),
        }
        msg
    }
}

/// The template text the error points at, from the template as loaded.
fn expression(env: &Environment<'_>, e: &minijinja::Error) -> Option<String> {
    let template = env.get_template(e.name()?).ok()?;
    template
        .source()
        .get(e.range()?)
        .map(|s| s.trim().to_string())
}

/// True when `text` names `var` as a whole word.
fn mentions(text: &str, var: &str) -> bool {
    text.match_indices(var).any(|(i, _)| {
        let word = |c: char| c.is_alphanumeric() || c == '_';
        !text[..i].ends_with(word) && !text[i + var.len()..].starts_with(word)
    })
}

fn environment(templates: &Path) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let dir = templates.to_path_buf();
    env.set_loader(move |name| {
        if name.contains('/') || name.contains("..") {
            return Ok(None);
        }
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(name
                .strip_suffix(".sql.j2")
                .and_then(crate::embedded::template)
                .map(str::to_string)),
            Err(e) => Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("cannot read {name}: {e}"),
            )),
        }
    });
    env.add_filter("ident", |s: String| -> Result<String, minijinja::Error> {
        quote_ident(&s)
    });
    env.add_filter(
        "qualified",
        |s: String| -> Result<String, minijinja::Error> { Ok(quote_qualified(&s)) },
    );
    env.add_filter("literal", |s: Value| quote_literal(&s.to_string()));
    env.add_filter("schema", |s: String| {
        s.split_once('.')
            .map_or(String::from("public"), |(a, _)| a.to_string())
    });
    env.add_filter("relname", |s: String| {
        s.split_once('.').map_or(s.clone(), |(_, b)| b.to_string())
    });
    // `{{ fail("why") }}`: a template's own check of its variables.
    env.add_function("fail", |why: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            why,
        ))
    });
    env.add_filter("sqltype", |s: String| -> Result<String, minijinja::Error> {
        sql_type(&s)
    });
    env
}

/// Migration files in `dir` that refinery would run (`V{n}__{name}.sql`).
fn scan(dir: &Path) -> Result<Vec<Existing>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(version) = file
            .strip_prefix('V')
            .and_then(|rest| rest.split_once("__"))
            .filter(|(_, name)| name.ends_with(".sql"))
            .and_then(|(v, _)| v.parse::<u64>().ok())
        else {
            continue;
        };
        let first = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string));
        let procedure = first
            .as_deref()
            .and_then(|l| l.strip_prefix(HEADER))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        out.push(Existing {
            version,
            path,
            procedure,
        });
    }
    Ok(out)
}

/// PostgreSQL's quote_ident: plain lower-case names stay bare, the rest are quoted.
pub fn quote_ident(s: &str) -> Result<String, minijinja::Error> {
    if s.is_empty() || s.len() > 63 {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{s}` is not a valid identifier (1 to 63 bytes)"),
        ));
    }
    let bare = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&s);
    Ok(if bare {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    })
}

/// `schema.name` with each part quoted as needed.
pub fn quote_qualified(s: &str) -> String {
    s.split('.')
        .map(|p| quote_ident(p).unwrap_or_else(|_| format!("\"{p}\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A SQL string literal (`E'…'` never needed: standard_conforming_strings).
pub fn quote_literal(s: &str) -> Result<String, minijinja::Error> {
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// A column type from YAML: a type name, optional (precision[, scale]), optional [].
pub fn sql_type(s: &str) -> Result<String, minijinja::Error> {
    let t = s.trim().to_lowercase();
    let (base, rest) = match t.find(['(', '[']) {
        Some(i) => (t[..i].trim_end(), &t[i..]),
        None => (t.as_str(), ""),
    };
    let base_ok = !base.is_empty()
        && base.starts_with(|c: char| c.is_ascii_lowercase())
        && base.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ' ' || c == '.'
        });
    let rest_ok = rest.is_empty()
        || rest == "[]"
        || (rest.starts_with('(')
            && rest.trim_end_matches("[]").ends_with(')')
            && rest.trim_end_matches("[]")[1..rest.trim_end_matches("[]").len() - 1]
                .split(',')
                .all(|n| !n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit())));
    if base_ok && rest_ok {
        Ok(t)
    } else {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{s}` is not a column type"),
        ))
    }
}

/// PostgreSQL's reserved key words (they need quotes as column names).
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_like_postgres_does() {
        assert_eq!(quote_ident("member_no").unwrap(), "member_no");
        assert_eq!(quote_ident("CONTACT_ID").unwrap(), "\"CONTACT_ID\"");
        assert_eq!(quote_ident("order").unwrap(), "\"order\"");
        assert_eq!(quote_ident("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert!(quote_ident("").is_err());
        assert_eq!(quote_qualified("l0.User"), "l0.\"User\"");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
    }

    #[test]
    fn column_types_are_checked() {
        for ok in [
            "bigint",
            "text",
            "numeric(10,2)",
            "timestamp with time zone",
            "text[]",
            "varchar(20)",
            "pg_catalog.int4",
        ] {
            assert!(sql_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "int; drop table x",
            "text)",
            "numeric(a)",
            "1int",
            "int --",
        ] {
            assert!(sql_type(bad).is_err(), "{bad}");
        }
    }
}
