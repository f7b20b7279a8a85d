//! A Confluent schema registry: the schemas of messages in its wire format
//! (magic byte 0, the 4-byte big-endian schema id, then the payload), asked
//! for once per id and kept.
//!
//! Fetching is async and happens before routing ([`Registry::resolve`]);
//! decoding then reads the cache synchronously ([`Registry::json_of`]).
//! A registry that does not answer (refused, timed out, 5xx, 429, a refused
//! login, an answer that is not the registry's) is a transient error: the
//! partition waits and retries, nothing is dead-lettered. An id the registry
//! does not have (404 with error code 40403), a schema pgchain cannot read,
//! and bytes that do not match their schema make the message undecodable.

use crate::chain::{ChainError, ErrorClass};
use crate::config::SchemaRegistry as Settings;
use crate::decode::avro::AvroSchema;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::info;

/// The schema id of Confluent-framed bytes (None for anything else, such as
/// JSON text, which never starts with a zero byte).
pub fn wire_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// What the registry said of one id.
#[derive(Debug)]
pub enum Known {
    Avro(AvroSchema),
    /// JSON Schema: the payload is JSON text.
    Json,
    /// No message with this id can be decoded; why, naming the id.
    Unusable(String),
    /// The registry does not have the id (asked again next time).
    Missing(String),
}

pub struct Registry {
    http: reqwest::Client,
    /// The URL without a trailing `/`.
    base: String,
    auth: Option<(String, String)>,
    cache: RwLock<HashMap<u32, Arc<Known>>>,
    /// One fetch at a time: partitions that meet a new id together ask once.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.base)
            .field("auth", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Registry {
    pub fn new(settings: &Settings) -> Registry {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Registry {
            http,
            base: settings.url.trim().trim_end_matches('/').to_string(),
            auth: settings
                .username
                .clone()
                .map(|u| (u, settings.password.clone().unwrap_or_default())),
            cache: RwLock::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, id: u32) -> Option<Arc<Known>> {
        self.cache.read().expect("cache lock").get(&id).cloned()
    }

    /// True when `id` needs asking (not asked yet, or missing last time).
    pub fn needs(&self, id: u32) -> bool {
        self.cached(id)
            .is_none_or(|k| matches!(*k, Known::Missing(_)))
    }

    /// Asks the registry for `id` unless it is known; a transient error when
    /// the registry does not answer as a registry.
    pub async fn resolve(&self, id: u32) -> Result<(), ChainError> {
        if !self.needs(id) {
            return Ok(());
        }
        let _one = self.fetching.lock().await;
        if !self.needs(id) {
            return Ok(());
        }
        let known = self.fetch(id).await?;
        if let Known::Missing(why) = &known {
            tracing::debug!("{why}");
        }
        self.cache
            .write()
            .expect("cache lock")
            .insert(id, Arc::new(known));
        Ok(())
    }

    async fn fetch(&self, id: u32) -> Result<Known, ChainError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut req = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json",
        );
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let unavailable = |why: String| ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: format!("schema registry {url}: {why}"),
            detail: None,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| unavailable(format!("no answer: {}", error_chain(&e))))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| unavailable(format!("the answer broke off: {}", error_chain(&e))))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let code = json
            .as_ref()
            .and_then(|j| j.get("error_code"))
            .and_then(Value::as_i64);
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if status == reqwest::StatusCode::NOT_FOUND && code == Some(40403) {
            return Ok(Known::Missing(format!(
                "schema id {id} is not in the schema registry (error 40403: {message})"
            )));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(unavailable(format!(
                "HTTP {status}: the registry refuses the credentials; check \
                 `schema_registry.username` and `password`"
            )));
        }
        if !status.is_success() {
            let what = if status == reqwest::StatusCode::NOT_FOUND {
                " without error code 40403 (is `schema_registry.url` the registry's?)".to_string()
            } else if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            return Err(unavailable(format!("HTTP {status}{what}")));
        }
        let Some(text) = json
            .as_ref()
            .and_then(|j| j.get("schema"))
            .and_then(Value::as_str)
        else {
            return Err(unavailable(
                "HTTP 200 without a `schema` string: not a schema registry's answer".into(),
            ));
        };
        let kind = json
            .as_ref()
            .and_then(|j| j.get("schemaType"))
            .and_then(Value::as_str)
            .unwrap_or("AVRO");
        let known = match kind {
            "AVRO" => match AvroSchema::parse(text) {
                Ok(schema) => Known::Avro(schema),
                Err(e) => {
                    let refs = json
                        .as_ref()
                        .and_then(|j| j.get("references"))
                        .and_then(Value::as_array)
                        .is_some_and(|r| !r.is_empty());
                    Known::Unusable(format!(
                        "schema id {id} is an Avro schema pgchain cannot read: {e}{}",
                        if refs {
                            " (it references other schemas, which pgchain does not resolve)"
                        } else {
                            ""
                        }
                    ))
                }
            },
            "JSON" => Known::Json,
            other => Known::Unusable(format!(
                "schema id {id} is a {other} schema; pgchain decodes Avro and JSON Schema"
            )),
        };
        info!(
            schema_id = id,
            kind, "schema fetched from the schema registry"
        );
        Ok(known)
    }

    /// The JSON value of Confluent-framed `bytes` (`what`: "the message
    /// value"), from the cache [`Registry::resolve`] filled.
    pub fn json_of(&self, id: u32, bytes: &[u8], what: &str) -> Result<Value, String> {
        let payload = &bytes[5..];
        match self.cached(id).as_deref() {
            None => Err(format!(
                "{what} names schema id {id}, which was not fetched from the schema registry"
            )),
            Some(Known::Missing(why) | Known::Unusable(why)) => Err(format!("{what}: {why}")),
            Some(Known::Json) => serde_json::from_slice(payload)
                .map_err(|e| format!("{what} does not match schema id {id} (JSON Schema): {e}")),
            Some(Known::Avro(schema)) => schema
                .decode(payload)
                .map_err(|e| format!("{what} does not match schema id {id} (Avro): {e}")),
        }
    }
}

/// An error with its causes (reqwest's own text says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
