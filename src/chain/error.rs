//! Chain errors: their class (what pgchain does about them) by SQLSTATE, and
//! the step that raised, read from PostgreSQL's error context.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database or the network; the same event will work later.
    Transient,
    /// A step raised `PGW01`: a row it depends on has not arrived yet.
    DependencyMissing,
    /// The event itself fails (constraint, a step's own `raise exception`).
    Data,
    /// What a step needs is not in the database (a procedure, table or
    /// schema not migrated yet): no event is at fault, so nothing is
    /// dead-lettered; the partition waits, like for a transient error.
    Deployment,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::DependencyMissing => "dependency",
            ErrorClass::Data => "data",
            ErrorClass::Deployment => "deployment",
        }
    }

    /// Retried until it works, the partition paused meanwhile: the cause
    /// is outside the event.
    pub fn retried_forever(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Deployment)
    }
}

/// A failed chain run, with what a user needs to find the cause.
#[derive(Debug, Clone)]
pub struct ChainError {
    pub class: ErrorClass,
    pub sqlstate: Option<String>,
    /// The step that raised, when the error came from inside one.
    pub step: Option<String>,
    pub message: String,
    pub detail: Option<String>,
}

/// A schema registry that does not answer holds the partition as a
/// database outage does.
impl From<crate::registry::Unavailable> for ChainError {
    fn from(e: crate::registry::Unavailable) -> Self {
        ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: e.0,
            detail: None,
        }
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.step {
            write!(f, "step {step}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ChainError {}

/// SQLSTATEs that a retry can cure: connection trouble (class 08),
/// serialization failure, deadlock, lock not available, shutdowns, and
/// resource exhaustion (class 53).
pub fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "55P03" | "57P01" | "57P02" | "57P03")
        || is_conflict(code)
}

/// A serialization failure or a deadlock: two transactions met, and the one
/// PostgreSQL rolled back can run again at once.
pub fn is_conflict(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

/// SQLSTATEs of something a step names that the database lacks: a
/// function or procedure (42883), table (42P01), schema (3F000), column
/// (42703), parameter (42P02) or other object (42704). `pgchain migrate`
/// (or the user's own migration) cures them, never the event.
pub fn is_deployment(code: &str) -> bool {
    matches!(
        code,
        "42883" | "42P01" | "3F000" | "42703" | "42P02" | "42704"
    )
}

pub fn classify(code: &str) -> ErrorClass {
    if is_transient(code) {
        ErrorClass::Transient
    } else if is_deployment(code) {
        ErrorClass::Deployment
    } else if code == "PGW01" {
        ErrorClass::DependencyMissing
    } else {
        ErrorClass::Data
    }
}

pub(crate) fn db_error(e: &tokio_postgres::Error) -> ChainError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code().to_string();
            ChainError {
                class: classify(&code),
                step: db.where_().and_then(failing_step),
                sqlstate: Some(code),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
            }
        }
        // No server error: the connection broke or could not be used.
        None => ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: e.to_string(),
            detail: None,
        },
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> ChainError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(&e),
        other => ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: format!("no database connection: {other}"),
            detail: None,
        },
    }
}

/// The step named in an error's CONTEXT: the `call schema.proc($1)` statement
/// just inside `pgchain.run_chain`, which every runner calls.
pub fn failing_step(context: &str) -> Option<String> {
    let lines: Vec<&str> = context.lines().collect();
    let runner = lines
        .iter()
        .position(|l| l.contains("function pgchain.run_chain("))?;
    let stmt = lines[..runner]
        .iter()
        .rev()
        .find(|l| l.starts_with("SQL statement \"call "))?;
    let name = stmt
        .strip_prefix("SQL statement \"call ")?
        .split('(')
        .next()?;
    Some(name.replace('"', ""))
}

/// A PostgreSQL error as a user needs it: message, detail, SQLSTATE.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; at: {}", w.lines().next().unwrap_or(w)));
            }
            format!("{s} (SQLSTATE {})", db.code().code())
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_registry_that_does_not_answer_is_transient() {
        let e = ChainError::from(crate::registry::Unavailable(
            "schema registry x: no answer".into(),
        ));
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.message, "schema registry x: no answer");
    }

    use super::*;

    #[test]
    fn names_the_step_inside_the_runner() {
        let ctx = "PL/pgSQL function l1.cleanse(jsonb) line 3 at RAISE\n\
                   SQL statement \"call l1.cleanse($1)\"\n\
                   PL/pgSQL function pgchain.run_chain(text[],jsonb,text,double precision[]) line 10 at EXECUTE\n\
                   SQL statement \"CALL pgchain.run_chain(p_steps, v_ev, o_status, o_step_ms)\"\n\
                   PL/pgSQL function pgchain.apply_event(text,text,integer,bigint,text,text[],jsonb,text,double precision[]) line 33 at CALL";
        assert_eq!(failing_step(ctx).as_deref(), Some("l1.cleanse"));
        // A step that itself calls another procedure: the outermost call counts.
        let nested = format!(
            "PL/pgSQL function l1.inner(jsonb) line 1 at RAISE\n\
             SQL statement \"call l1.inner($1)\"\n\
             PL/pgSQL function l1.cleanse(jsonb) line 3 at CALL\n{}",
            ctx.split_once('\n').unwrap().1
        );
        assert_eq!(failing_step(&nested).as_deref(), Some("l1.cleanse"));
        assert_eq!(failing_step("PL/pgSQL function x() line 1 at RAISE"), None);
    }

    #[test]
    fn classes_follow_sqlstate() {
        for code in ["08006", "40001", "40P01", "55P03", "57P01", "53300"] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify("PGW01"), ErrorClass::DependencyMissing);
        for code in ["23505", "P0001", "22P02", "22P05", "42601"] {
            assert_eq!(classify(code), ErrorClass::Data, "{code}");
        }
        for code in ["42883", "42P01", "3F000", "42703", "42P02", "42704"] {
            assert_eq!(classify(code), ErrorClass::Deployment, "{code}");
        }
    }
}
