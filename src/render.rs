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
//!
//! No text reaches the SQL unchecked. Every `{{ … }}` writes SQL: the result
//! of a quoting filter (`ident`, `qualified`, `literal`, `comment`,
//! `sqltype`, `expr`), of a macro or a `{% set %}…{% endset %}` block (their
//! own `{{ … }}` checked the same way), a number or a boolean. A bare string
//! (a variable from pipelines.yaml, or one built from it with `~`) is a render
//! error, and so is a value a filter cannot write safely: an identifier over
//! 63 bytes, a line break in a comment, a `;` in an expression, …; the error
//! names the template line, the expression and the variable in pipelines.yaml.

use crate::config::{Config, ProcedureSpec};
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Output, State, UndefinedBehavior, Value};
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
            Err(Failure { message, var: None }) => problems.push(format!(
                "{}procedure `{name}`: {message}",
                config.at(&["procedures", name])
            )),
            Err(Failure {
                message,
                var: Some((path, shown)),
            }) => {
                let mut at = vec!["procedures", name.as_str(), "vars"];
                at.extend(path.iter().map(String::as_str));
                problems.push(format!(
                    "{}procedure `{name}`: {message} (from `{shown}` in the procedure's vars)",
                    config.at(&at)
                ));
            }
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

/// Why a procedure did not render, and the variable of its vars that holds
/// the value a filter refused, if one does: its key path (for the line in
/// pipelines.yaml) and its name as a template author writes it.
struct Failure {
    message: String,
    var: Option<(Vec<String>, String)>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, var: None }
    }
}

fn render_one(
    env: &Environment<'_>,
    sources: &Sources,
    name: &str,
    spec: &ProcedureSpec,
) -> Result<String, Failure> {
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
    let quoted = quote_qualified(name).map_err(|e| {
        format!(
            "the procedure's name: {}",
            e.detail().unwrap_or("not an identifier")
        )
    })?;
    ctx.insert("procedure".into(), Value::from_safe_string(quoted));
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
            Failure {
                message: sources.describe(env, &e, &missing),
                var: refusal(&e).and_then(|r| locate(&spec.vars, &r.value)),
            }
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
        let at = match (place, e.line()) {
            (Some(place), Some(line)) => format!("{place}:{line}: "),
            (Some(place), None) => format!("{place}: "),
            _ => String::new(),
        };
        let detail = e.detail().map(str::to_string);
        // A value refused on its way into the SQL: the expression that wrote
        // it, and why (render_all adds the variable it came from).
        if refusal(e).is_some_and(|r| r.by_filter) {
            let expr = tag(env, e).map_or(String::new(), |x| format!("`{x}`: "));
            return format!("{at}{expr}{}", detail.as_deref().unwrap_or(""));
        }
        let mut msg = format!("{at}{}", e.kind());
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

/// The inside of the `{{ … }}` (or `{% … %}`) around the error's place.
fn tag(env: &Environment<'_>, e: &minijinja::Error) -> Option<String> {
    let template = env.get_template(e.name()?).ok()?;
    let source = template.source();
    let range = e.range()?;
    let open = ["{{", "{%"]
        .into_iter()
        .filter_map(|t| Some((source.get(..range.start)?.rfind(t)?, t)))
        .max()?;
    let close = if open.1 == "{{" { "}}" } else { "%}" };
    let inner = source.get(open.0 + 2..)?;
    let inner = &inner[..inner.find(close)?];
    Some(
        inner
            .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .to_string(),
    )
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
    // Every `{{ … }}` goes through write_sql; macros and `{% set %}` blocks
    // yield SQL (safe strings) because escaping is on.
    env.set_auto_escape_callback(|_| AutoEscape::Custom("sql".into()));
    env.set_formatter(write_sql);
    // No way around the filters: `safe` would pass any text, and `escape`
    // knows only HTML.
    for f in ["safe", "escape", "e"] {
        env.remove_filter(f);
    }
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
    env.add_filter("ident", |s: Value| {
        sql(quote_ident(&text(&s, "an identifier")?))
    });
    env.add_filter("qualified", |s: Value| {
        sql(quote_qualified(&text(&s, "a qualified name")?))
    });
    env.add_filter("literal", |s: Value| {
        sql(quote_literal(&text(&s, "a string literal")?))
    });
    env.add_filter("comment", |s: Value| sql(comment(&text(&s, "a comment")?)));
    env.add_filter("sqltype", |s: Value| {
        sql(sql_type(&text(&s, "a column type")?))
    });
    env.add_filter("expr", |s: Value| {
        sql(sql_expr(&text(&s, "an expression")?))
    });
    // Text, not SQL: the parts of `schema.table`, to go through `ident`.
    env.add_filter("schema", |s: String| {
        s.split_once('.')
            .map_or(String::from("public"), |(a, _)| a.to_string())
    });
    env.add_filter("relname", |s: String| {
        s.split_once('.').map_or(s.clone(), |(_, b)| b.to_string())
    });
    // `{{ fail("why") }}`: a template's own check of its variables;
    // `fail("why", value)` names the variable holding the value at fault.
    env.add_function(
        "fail",
        |why: String, value: Option<Value>| -> Result<String, minijinja::Error> {
            // One line, whatever the value at fault holds.
            let why: String = why
                .chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect();
            let e = minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why);
            Err(match value {
                Some(v) => e.with_source(Refused {
                    value: v.to_string(),
                    by_filter: false,
                }),
                None => e,
            })
        },
    );
    env
}

/// A filter's result: SQL, written as it is.
fn sql(quoted: Result<String, minijinja::Error>) -> Result<Value, minijinja::Error> {
    quoted.map(Value::from_safe_string)
}

/// The text of a scalar a filter quotes (`none`, a list or a map is no text).
fn text(v: &Value, what: &str) -> Result<String, minijinja::Error> {
    match v.kind() {
        ValueKind::String | ValueKind::Number | ValueKind::Bool => Ok(v.to_string()),
        kind => Err(refuse(
            &v.to_string(),
            format!("{kind} `{v}` cannot be {what}: it is not a string"),
        )),
    }
}

/// How `{{ … }}` writes a value: SQL (a filter's, a macro's or a block's
/// output), a number or a boolean as it is; nothing for the missing `else`
/// of `{{ x if c }}`; any other text is refused: it would go into the SQL
/// unquoted.
fn write_sql(out: &mut Output, _: &mut State, value: &Value) -> Result<(), minijinja::Error> {
    let written = match value.kind() {
        _ if value.is_safe() => Some(value.to_string()),
        ValueKind::Undefined => Some(String::new()),
        ValueKind::Bool => Some(value.is_true().to_string()),
        ValueKind::Number if f64::try_from(value.clone()).is_ok_and(f64::is_finite) => {
            Some(value.to_string())
        }
        _ => None,
    };
    if let Some(sql) = written {
        return out
            .write_str(&sql)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()));
    }
    let shown = match value.as_str() {
        Some(s) => format!("{s:?}"),
        None => format!("{} `{value}`", value.kind()),
    };
    Err(refuse(
        &value.to_string(),
        format!(
            "{shown} would go into the SQL as it is: pipe it through ident, qualified, literal, comment, sqltype or expr (the template's own SQL belongs outside {{{{ }}}}, in a macro or in a {{% set %}} block)"
        ),
    ))
}

/// A value a filter (or `{{ … }}`) refused; carried as the error's source so
/// that render_all can name the variable holding it.
/// `fail(why, value)` carries one too (`by_filter: false`).
#[derive(Debug)]
struct Refused {
    value: String,
    by_filter: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused {:?}", self.value)
    }
}

impl std::error::Error for Refused {}

fn refuse(value: &str, why: String) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why).with_source(Refused {
        value: value.to_string(),
        by_filter: true,
    })
}

/// The refusal behind `e`, if it is one.
fn refusal(e: &minijinja::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

/// The variable of `vars` that `text` came from: the one that is `text`,
/// else one `text` is a dotted part of (`schema`, `relname` of
/// `schema.table`). Its key path and its name as a template reads it
/// (`key[0]`, `columns.id`). A value built from several (`~`) is not traced.
fn locate(
    vars: &indexmap::IndexMap<String, serde_yaml::Value>,
    text: &str,
) -> Option<(Vec<String>, String)> {
    type Best = Option<(u8, Vec<String>, String)>;
    fn consider(best: &mut Best, s: &str, text: &str, path: &[String], shown: &str) {
        let score = if s == text {
            2
        } else if s.contains('.') && s.split('.').any(|p| p == text) {
            1
        } else {
            return;
        };
        if best.as_ref().is_none_or(|(b, ..)| score > *b) {
            *best = Some((score, path.to_vec(), shown.to_string()));
        }
    }
    fn walk(
        v: &serde_yaml::Value,
        text: &str,
        path: &mut Vec<String>,
        shown: &str,
        best: &mut Best,
    ) {
        match v {
            serde_yaml::Value::String(s) => consider(best, s, text, path, shown),
            serde_yaml::Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(item, text, path, &format!("{shown}[{i}]"), best);
                    path.pop();
                }
            }
            serde_yaml::Value::Mapping(map) => {
                for (k, item) in map {
                    let Some(k) = k.as_str() else { continue };
                    path.push(k.to_string());
                    let plain = k.chars().all(|c| c.is_alphanumeric() || c == '_');
                    let inner = if plain {
                        format!("{shown}.{k}")
                    } else {
                        format!("{shown}.{k:?}")
                    };
                    consider(best, k, text, path, &inner);
                    walk(item, text, path, &inner, best);
                    path.pop();
                }
            }
            serde_yaml::Value::Tagged(t) => walk(&t.value, text, path, shown, best),
            _ => {}
        }
    }
    let mut best: Best = None;
    for (k, v) in vars {
        walk(v, text, &mut vec![k.clone()], k, &mut best);
    }
    best.map(|(_, path, shown)| (path, shown))
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

/// Why `s` cannot go into SQL text at all: a control character (a line
/// break would end a `--` comment), or a `$tag$` that would end the
/// `$$`-quoted body of a function around it.
fn unwritable(s: &str) -> Option<String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Some(format!(
            "it holds the control character {c:?} (a line break, tab or NUL)"
        ));
    }
    dollar_tag(s).map(|tag| format!("it holds `{tag}`, which would end a $-quoted function body"))
}

/// The first `$…$` in `s` whose inside could be a dollar-quote tag.
fn dollar_tag(s: &str) -> Option<&str> {
    s.match_indices('$').find_map(|(i, _)| {
        let rest = &s[i + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()))
            .unwrap_or(rest.len());
        rest[len..].starts_with('$').then(|| &s[i..i + len + 2])
    })
}

/// PostgreSQL's quote_ident: plain lower-case names stay bare, the rest are
/// quoted with `"` doubled. Refused: an empty name, one over 63 bytes
/// (PostgreSQL would cut it to 63, and two names could become one), and
/// one that cannot go into SQL text (see `unwritable`).
pub fn quote_ident(s: &str) -> Result<String, minijinja::Error> {
    let why = if s.is_empty() {
        Some("it is empty".to_string())
    } else if s.len() > 63 {
        Some(format!(
            "it is {} bytes and PostgreSQL keeps only the first 63 of a name",
            s.len()
        ))
    } else {
        unwritable(s)
    };
    if let Some(why) = why {
        return Err(refuse(s, format!("{s:?} cannot be an identifier: {why}")));
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

/// `schema.name` with each part quoted as needed (each part as `quote_ident`).
pub fn quote_qualified(s: &str) -> Result<String, minijinja::Error> {
    let parts = s
        .split('.')
        .map(|p| {
            quote_ident(p).map_err(|e| {
                refuse(
                    s,
                    format!(
                        "{s:?} cannot be a qualified name: part {}",
                        e.detail().unwrap_or_default()
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join("."))
}

/// PostgreSQL's quote_literal: `'…'` with `'` doubled; `E'…'` with `\\`
/// doubled when the text holds a backslash, so it reads the same whatever
/// standard_conforming_strings says. A `$tag$` inside is written `\x24tag$`
/// (an `E'…'` escape) so that it cannot end a `$$`-quoted body. Refused: NUL,
/// which no PostgreSQL text can hold.
pub fn quote_literal(s: &str) -> Result<String, minijinja::Error> {
    if s.contains('\0') {
        return Err(refuse(
            s,
            format!("{s:?} cannot be a string literal: PostgreSQL text cannot hold NUL"),
        ));
    }
    let doubled = s.replace('\'', "''");
    Ok(if s.contains('\\') || dollar_tag(s).is_some() {
        format!("E'{}'", doubled.replace('\\', "\\\\").replace('$', "\\x24"))
    } else {
        format!("'{doubled}'")
    })
}

/// Text for a `--` (or `/* */`) comment. Refused: a line break or any
/// control character (the rest of the line would be SQL), `/*` and `*/`,
/// and a `$tag$` (see `unwritable`).
pub fn comment(s: &str) -> Result<String, minijinja::Error> {
    let why = unwritable(s).or_else(|| {
        ["/*", "*/"]
            .into_iter()
            .find(|t| s.contains(t))
            .map(|t| format!("it holds `{t}`"))
    });
    match why {
        Some(why) => Err(refuse(s, format!("{s:?} cannot go into a comment: {why}"))),
        None => Ok(s.to_string()),
    }
}

/// A SQL expression written in pipelines.yaml on purpose (a condition, a
/// default), in parentheses so that it stays one operand. Quotes and
/// parentheses must be balanced; refused outside quotes: `;` (it would end
/// the statement), `--`, `/*` and `*/` (comments), `$` (parameters, dollar
/// quotes); anywhere: a backslash (an escape in `E'…'`), a line break or any
/// control character, a `$tag$`.
pub fn sql_expr(s: &str) -> Result<String, minijinja::Error> {
    let t = s.trim();
    let no = |why: &str| Err(refuse(s, format!("{s:?} cannot be an expression: {why}")));
    if t.is_empty() {
        return no("it is empty");
    }
    if let Some(why) = unwritable(t) {
        return no(&why);
    }
    if t.contains('\\') {
        return no("it holds a backslash");
    }
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        match (quote, c) {
            // `''` and `""` stay inside.
            (Some(q), c) if c == q && next == Some(q) => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => return no("a `;` would end the statement"),
            (None, '-') if next == Some('-') => return no("it holds a comment (`--`)"),
            (None, '/') if next == Some('*') => return no("it holds a comment (`/*`)"),
            (None, '*') if next == Some('/') => return no("it holds `*/`"),
            (None, '$') => return no("it holds `$` outside quotes"),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => return no("a `)` closes what it did not open"),
            (None, ')') => depth -= 1,
            (None, _) => {}
        }
    }
    if quote.is_some() {
        return no("a quote is not closed");
    }
    if depth > 0 {
        return no("a `(` is not closed");
    }
    Ok(format!("({t})"))
}

/// The multi-word type names of SQL, each a sequence of words.
const TYPE_PHRASES: &[&[&str]] = &[
    &["double", "precision"],
    &["character", "varying"],
    &["char", "varying"],
    &["bit", "varying"],
    &["national", "character", "varying"],
    &["national", "char", "varying"],
    &["national", "character"],
    &["national", "char"],
];

/// The fields an `interval` may name.
const INTERVAL_FIELDS: &[&[&str]] = &[
    &["year", "to", "month"],
    &["day", "to", "hour"],
    &["day", "to", "minute"],
    &["day", "to", "second"],
    &["hour", "to", "minute"],
    &["hour", "to", "second"],
    &["minute", "to", "second"],
    &["year"],
    &["month"],
    &["day"],
    &["hour"],
    &["minute"],
    &["second"],
];

/// A column type from YAML, written lower-case: a type name (one word,
/// optionally `schema.`-qualified, or one of SQL's multi-word names),
/// optional `(precision[, scale])`, `with`/`without time zone` after `time`
/// and `timestamp`, fields after `interval`, then any `[]`.
pub fn sql_type(s: &str) -> Result<String, minijinja::Error> {
    let t = s.trim().to_lowercase();
    if type_tokens(&t).is_some_and(|tokens| valid_type(&tokens)) {
        Ok(t)
    } else {
        Err(refuse(s, format!("{s:?} is not a column type")))
    }
}

#[derive(Debug, PartialEq)]
enum TypeToken<'a> {
    Word(&'a str),
    Number,
    Punct(char),
}

fn type_tokens(t: &str) -> Option<Vec<TypeToken<'_>>> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if c == ' ' {
            rest = &rest[1..];
        } else if c.is_ascii_lowercase() || c == '_' {
            let n = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            out.push(TypeToken::Word(&rest[..n]));
            rest = &rest[n..];
        } else if c.is_ascii_digit() {
            let n = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            out.push(TypeToken::Number);
            rest = &rest[n..];
        } else if "(),[].".contains(c) {
            out.push(TypeToken::Punct(c));
            rest = &rest[1..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn valid_type(tokens: &[TypeToken<'_>]) -> bool {
    use TypeToken::{Number, Punct, Word};
    let phrase = |at: usize, words: &[&str]| {
        words.len() <= tokens.len() - at.min(tokens.len())
            && words
                .iter()
                .enumerate()
                .all(|(i, w)| tokens[at + i] == Word(w))
    };
    // The name.
    let mut i = match tokens {
        [Word(_), Punct('.'), Word(_), ..] => 3,
        [Word(_), ..] => TYPE_PHRASES
            .iter()
            .find(|p| phrase(0, p))
            .map_or(1, |p| p.len()),
        _ => return false,
    };
    let name = &tokens[..i];
    if name == [Word("interval")]
        && let Some(f) = INTERVAL_FIELDS.iter().find(|f| phrase(i, f))
    {
        i += f.len();
    }
    // (precision[, scale])
    match &tokens[i..] {
        [Punct('('), Number, Punct(')'), ..] => i += 3,
        [Punct('('), Number, Punct(','), Number, Punct(')'), ..] => i += 5,
        _ => {}
    }
    if name == [Word("time")] || name == [Word("timestamp")] {
        for zone in [&["with", "time", "zone"][..], &["without", "time", "zone"]] {
            if phrase(i, zone) {
                i += 3;
                break;
            }
        }
    }
    // Array dimensions.
    loop {
        match &tokens[i..] {
            [] => return true,
            [Punct('['), Punct(']'), ..] => i += 2,
            [Punct('['), Number, Punct(']'), ..] => i += 3,
            _ => return false,
        }
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

    fn render(template: &str, vars: minijinja::Value) -> Result<String, String> {
        let env = environment(Path::new("/nonexistent"));
        env.render_str(template, vars)
            .map_err(|e| e.detail().unwrap_or_default().to_string())
    }

    #[test]
    fn identifiers_are_quoted_like_postgres_does() {
        assert_eq!(quote_ident("member_no").unwrap(), "member_no");
        assert_eq!(quote_ident("CONTACT_ID").unwrap(), "\"CONTACT_ID\"");
        assert_eq!(quote_ident("order").unwrap(), "\"order\"");
        assert_eq!(quote_ident("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert_eq!(
            quote_ident("x\"; drop table y; --").unwrap(),
            "\"x\"\"; drop table y; --\""
        );
        assert_eq!(quote_ident("it's").unwrap(), "\"it's\"");
        assert_eq!(quote_ident("a$b").unwrap(), "\"a$b\"");
        assert_eq!(quote_qualified("l0.User").unwrap(), "l0.\"User\"");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
    }

    #[test]
    fn identifiers_that_postgres_would_cut_or_that_break_lines_are_refused() {
        let long = "a".repeat(64);
        let e = quote_ident(&long).unwrap_err();
        assert!(
            e.detail().unwrap().contains("64 bytes"),
            "{}",
            e.detail().unwrap()
        );
        assert!(quote_ident(&"a".repeat(63)).is_ok());
        // 22 three-byte characters: 66 bytes.
        assert!(quote_ident(&"가".repeat(22)).is_err());
        assert!(quote_ident(&"가".repeat(21)).is_ok());
        for bad in [
            "",
            "x\ndrop table y;",
            "x\r",
            "tab\there",
            "nul\0",
            "a$$b",
            "a$q$b",
        ] {
            assert!(quote_ident(bad).is_err(), "{bad:?}");
        }
        // No fallback for a part over 63 bytes: the whole name is refused.
        assert!(quote_qualified(&format!("l0.{long}\"")).is_err());
        assert!(quote_qualified("l0.").is_err());
        assert!(quote_qualified("l0.x\ny").is_err());
    }

    #[test]
    fn literals_read_the_same_in_and_out_of_dollar_quotes() {
        assert_eq!(
            quote_literal("x'; drop table y; --").unwrap(),
            "'x''; drop table y; --'"
        );
        assert_eq!(quote_literal(r"a\b").unwrap(), r"E'a\\b'");
        assert_eq!(quote_literal(r"\'").unwrap(), r"E'\\'''");
        assert_eq!(
            quote_literal("a$$; drop table y; --").unwrap(),
            r"E'a\x24\x24; drop table y; --'"
        );
        assert_eq!(quote_literal("US$").unwrap(), "'US$'");
        assert_eq!(quote_literal("line\nbreak").unwrap(), "'line\nbreak'");
        assert!(quote_literal("nul\0").is_err());
    }

    #[test]
    fn comments_cannot_end_their_line() {
        assert_eq!(
            comment("l0.x\"; drop table y; --").unwrap(),
            "l0.x\"; drop table y; --"
        );
        for bad in [
            "x\ndrop table y;",
            "x\rdrop table y;",
            "a */ b",
            "a /* b",
            "a$$b",
            "\u{b}",
        ] {
            assert!(comment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expressions_stay_one_operand() {
        assert_eq!(sql_expr(" a > 1 ").unwrap(), "(a > 1)");
        assert_eq!(
            sql_expr("status in ('a;b', 'it''s') and \"we;ird\" is not null").unwrap(),
            "(status in ('a;b', 'it''s') and \"we;ird\" is not null)"
        );
        assert_eq!(sql_expr("(a) or (b)").unwrap(), "((a) or (b))");
        for bad in [
            "",
            "true; drop table y; --",
            "true -- x",
            "true /* x */",
            "x\ndrop table y",
            "'unterminated",
            "\"unterminated",
            "a) or (b",
            "(a",
            "$1",
            "'$$'",
            r"E'\'; drop table y; --'",
            "a = 'x''; drop table y; --",
        ] {
            assert!(sql_expr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn column_types_are_checked() {
        for ok in [
            "bigint",
            "text",
            "numeric(10,2)",
            "numeric(10, 2)",
            "Timestamp With Time Zone",
            "timestamp(3) with time zone",
            "time without time zone",
            "double precision",
            "character varying(20)",
            "interval day to second",
            "text[]",
            "int[3][]",
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
            "bigint or true",
            "text collate c",
            "bigint primary key",
            "int with time zone",
            "numeric(1,2,3)",
            "a.b.c",
            "text\n, y int",
        ] {
            assert!(sql_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_string_is_refused_and_sql_passes() {
        let vars =
            minijinja::context! { table => "l0.x\ndrop table y;", n => 5, b => true, s => "x" };
        let e = render("-- {{ table }}", vars.clone()).unwrap_err();
        assert!(e.contains("would go into the SQL as it is"), "{e}");
        // Built with `~`, still text.
        assert!(render("{{ s ~ 'y' }}", vars.clone()).is_err());
        // SQL joined to text: the text is refused too.
        assert!(render("{{ (s | ident) ~ '.' }}", vars.clone()).is_err());
        assert!(render("{{ table | safe }}", vars.clone()).is_err());
        assert!(render("{{ table | e }}", vars.clone()).is_err());
        assert!(render("{{ none }}", vars.clone()).is_err());
        assert!(render("{{ [s] }}", vars.clone()).is_err());
        assert_eq!(
            render(
                "{% macro m(x) %}t.{{ x | ident }}{% endmacro %}{% set f %}m.{{ s | ident }}{% endset %}\
                 {{ m(s) }} {{ f }} {{ n }} {{ b }} {{ 'a' | literal }} \
                 {% for i in [1, 2] %}{{ i }}{% if not loop.last %}, {% endif %}{% endfor %}{{ s if false }}",
                vars
            )
            .unwrap(),
            "t.x m.x 5 true 'a' 1, 2"
        );
    }

    #[test]
    fn a_refused_value_is_traced_to_its_variable() {
        let vars: indexmap::IndexMap<String, serde_yaml::Value> = serde_yaml::from_str(
            "table: \"l0.x\\ny\"\ncolumns: {id: bigint, \"a b\": text}\nkey: [id, \"k\\n\"]\n",
        )
        .unwrap();
        let at = |t: &str| locate(&vars, t).map(|(p, s)| (p.join("/"), s));
        assert_eq!(at("l0.x\ny"), Some(("table".into(), "table".into())));
        assert_eq!(at("x\ny"), Some(("table".into(), "table".into())));
        assert_eq!(at("k\n"), Some(("key/1".into(), "key[1]".into())));
        assert_eq!(
            at("a b"),
            Some(("columns/a b".into(), "columns.\"a b\"".into()))
        );
        assert_eq!(at("nowhere"), None);
    }
}
