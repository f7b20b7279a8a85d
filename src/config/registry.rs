//! `schema_registry:` — a Confluent schema registry, for messages in its
//! wire format (Avro, JSON Schema).

use serde::Deserialize;
use std::fmt;

/// Where the schemas of Avro and JSON Schema messages are. The password is
/// never shown: not by `Debug`, not in errors.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistry {
    /// `http(s)://host:port[/path]`, without credentials.
    pub url: String,
    /// HTTP basic auth (Confluent Cloud: the API key and secret).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl SchemaRegistry {
    /// What is wrong with the settings, as (key, message); never quotes the
    /// password, nor a URL that may hold one.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(self.url.trim()) {
            Ok(url) => {
                if !matches!(url.scheme(), "http" | "https") {
                    out.push((
                        "url",
                        format!(
                            "`schema_registry.url` must be an http:// or https:// URL, not {}://",
                            url.scheme()
                        ),
                    ));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    out.push((
                        "url",
                        "`schema_registry.url` holds credentials: give them as \
                         `schema_registry.username` and `password` (from `${VAR}`), so they stay out of logs"
                            .to_string(),
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    out.push((
                        "url",
                        "`schema_registry.url` must not hold a query or fragment".to_string(),
                    ));
                }
            }
            Err(e) => out.push((
                "url",
                format!("`schema_registry.url` is not a URL ({e}); give http(s)://host:port"),
            )),
        }
        match (&self.username, &self.password) {
            (Some(_), None) => out.push((
                "username",
                "`schema_registry.username` is set without `password`".to_string(),
            )),
            (None, Some(_)) => out.push((
                "password",
                "`schema_registry.password` is set without `username`".to_string(),
            )),
            (Some(u), Some(_)) if u.contains(':') => out.push((
                "username",
                "`schema_registry.username` must not contain `:` (HTTP basic auth)".to_string(),
            )),
            _ => {}
        }
        out
    }
}
