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

/// The registry did not answer as a registry (no connection, an HTTP error,
/// refused credentials, a page that is not its answer): the message is not
/// at fault, so the partition waits (a transient error of the chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

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

    /// Asks the registry for `id` unless it is known; [`Unavailable`] when
    /// the registry does not answer as a registry.
    pub async fn resolve(&self, id: u32) -> Result<(), Unavailable> {
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

    async fn fetch(&self, id: u32) -> Result<Known, Unavailable> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut req = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json",
        );
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let unavailable = |why: String| Unavailable(format!("schema registry {url}: {why}"));
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

    /// Asks the registry which schema types it holds (`GET /schemas/types`):
    /// whether the URL is a registry's and the credentials are taken.
    pub async fn probe(&self) -> Result<Vec<String>, String> {
        let url = format!("{}/schemas/types", self.base);
        let mut req = self.http.get(&url);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("no answer: {}", error_chain(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!(
                "HTTP {status}: the registry refuses the credentials (`schema_registry.username` and `password`)"
            ));
        }
        if !status.is_success() {
            return Err(format!(
                "HTTP {status} to GET {url}: is it a schema registry?"
            ));
        }
        resp.json::<Vec<String>>().await.map_err(|_| {
            format!("GET {url} did not answer a list of schema types: is it a schema registry?")
        })
    }

    /// The JSON value of Confluent-framed `bytes` (`what`: "the message
    /// value"), from the cache [`Registry::resolve`] filled.
    /// `unavailable`: the placeholders of values Debezium does not have.
    pub fn json_of(
        &self,
        id: u32,
        bytes: &[u8],
        what: &str,
        unavailable: &[&str],
    ) -> Result<Value, String> {
        let payload = &bytes[5..];
        match self.cached(id).as_deref() {
            None => Err(format!(
                "{what} names schema id {id}, which was not fetched from the schema registry"
            )),
            Some(Known::Missing(why) | Known::Unusable(why)) => Err(format!("{what}: {why}")),
            Some(Known::Json) => serde_json::from_slice(payload)
                .map_err(|e| format!("{what} does not match schema id {id} (JSON Schema): {e}")),
            Some(Known::Avro(schema)) => schema
                .decode_marking(payload, unavailable)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry on loopback answering every request with `status` and `body`.
    async fn answering(status: u16, body: &'static str) -> Registry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/vnd.schemaregistry.v1+json")],
                body,
            )
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Registry::new(&Settings {
            url: format!("http://{addr}/"),
            username: Some("u".into()),
            password: Some("hunter2".into()),
        })
    }

    #[test]
    fn the_wire_format_is_byte_zero_and_a_big_endian_id() {
        assert_eq!(wire_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(wire_id(&[0, 0, 0, 0, 7]), Some(7));
        assert_eq!(wire_id(&[0, 0, 0, 7]), None);
        assert_eq!(wire_id(b"{\"id\":1}"), None);
    }

    #[tokio::test]
    async fn what_the_registry_answers_decides_the_error_class() {
        // Not the message's fault: the partition waits.
        for (status, body, says) in [
            (
                500,
                r#"{"error_code":50001,"message":"Error in the backend data store"}"#,
                "HTTP 500 Internal Server Error: Error in the backend data store",
            ),
            (
                401,
                r#"{"error_code":401,"message":"Unauthorized"}"#,
                "refuses the credentials",
            ),
            (429, "", "HTTP 429"),
            (
                404,
                r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#,
                "without error code 40403",
            ),
            (200, "<html>proxy</html>", "not a schema registry's answer"),
        ] {
            let r = answering(status, body).await;
            let e = r.resolve(5).await.unwrap_err();
            assert!(e.0.contains(says), "{status}: {}", e.0);
            assert!(!e.0.contains("hunter2"));
            assert!(r.needs(5));
        }
        // The message's fault: undecodable, the id named.
        let r = answering(404, r#"{"error_code":40403,"message":"Schema not found"}"#).await;
        r.resolve(5).await.unwrap();
        assert_eq!(
            r.json_of(5, &[0, 0, 0, 0, 5, 1], "the message value", &[])
                .unwrap_err(),
            "the message value: schema id 5 is not in the schema registry (error 40403: Schema not found)"
        );
        assert!(r.needs(5), "a missing id is asked again next time");
        let r = answering(
            200,
            r#"{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}"#,
        )
        .await;
        r.resolve(6).await.unwrap();
        assert_eq!(
            r.json_of(6, &[0, 0, 0, 0, 6, 1], "the message key", &[])
                .unwrap_err(),
            "the message key: schema id 6 is a PROTOBUF schema; pgchain decodes Avro and JSON Schema"
        );
        assert!(!r.needs(6));
        let r = answering(200, r#"{"schema":"{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"a\",\"type\":\"Other\"}]}","references":[{"name":"Other","subject":"other","version":1}]}"#).await;
        r.resolve(8).await.unwrap();
        let e = r
            .json_of(8, &[0, 0, 0, 0, 8], "the message value", &[])
            .unwrap_err();
        assert!(
            e.contains("schema id 8 is an Avro schema pgchain cannot read"),
            "{e}"
        );
        assert!(
            e.ends_with("(it references other schemas, which pgchain does not resolve)"),
            "{e}"
        );
        // JSON Schema: the JSON after the prefix; bytes that are not JSON name the id.
        let r = answering(
            200,
            r#"{"schema":"{\"type\":\"object\"}","schemaType":"JSON"}"#,
        )
        .await;
        r.resolve(9).await.unwrap();
        let mut framed = vec![0, 0, 0, 0, 9];
        framed.extend_from_slice(br#"{"id":1}"#);
        assert_eq!(
            r.json_of(9, &framed, "the message value", &[]).unwrap(),
            serde_json::json!({"id": 1})
        );
        let e = r
            .json_of(9, &[0, 0, 0, 0, 9, b'{'], "the message value", &[])
            .unwrap_err();
        assert!(
            e.starts_with("the message value does not match schema id 9 (JSON Schema)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_registry_that_refuses_connections_is_transient() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = Registry::new(&Settings {
            url: format!("http://127.0.0.1:{port}"),
            username: None,
            password: None,
        });
        let e = r.resolve(1).await.unwrap_err();
        assert!(e.0.contains("no answer"), "{}", e.0);
    }
}
