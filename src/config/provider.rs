//! `kafka.provider`: connection settings a hosting platform hands over in
//! its own environment variables, turned into librdkafka options.
//!
//! Heroku's Apache Kafka add-on sets `KAFKA_URL` (a comma list of
//! `kafka+ssl://host:port`, or `kafka://` for a plain listener),
//! `KAFKA_TRUSTED_CERT` (the CA bundle, two certificates during a rotation),
//! `KAFKA_CLIENT_CERT` and `KAFKA_CLIENT_CERT_KEY` (PEM), and on
//! multi-tenant plans `KAFKA_PREFIX`, which every topic and consumer group
//! name must start with. Its brokers' certificates do not name stable host
//! names, so the chain is verified against the trusted CA but the host name
//! is not.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Heroku,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Heroku => "heroku",
        }
    }
}

/// What a provider's environment gives: the brokers, librdkafka options and
/// the name prefix. The option values may be keys: never print them.
#[derive(Clone, Default, PartialEq)]
pub struct Provided {
    pub brokers: String,
    pub options: Vec<(String, String)>,
    pub prefix: Option<String>,
}

/// Keys only: the values hold certificates and a private key.
impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("brokers", &self.brokers)
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Reads `provider`'s variables through `env`; every problem is one line
/// naming the variable (never its value).
pub fn resolve(
    provider: Provider,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provided, Vec<String>> {
    match provider {
        Provider::Heroku => heroku(env),
    }
}

fn heroku(env: &dyn Fn(&str) -> Option<String>) -> Result<Provided, Vec<String>> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut problems = Vec::new();
    let Some(url) = var("KAFKA_URL") else {
        return Err(vec![
            "`kafka.provider: heroku` reads the brokers from KAFKA_URL, which is not set \
             (attach the Kafka add-on, or `heroku config:get KAFKA_URL` to see it)"
                .into(),
        ]);
    };
    let mut brokers = Vec::new();
    let mut schemes = Vec::new();
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, address) = match part.split_once("://") {
            Some((s, a)) => (s, a),
            None => ("", part),
        };
        let tls = match scheme {
            "kafka+ssl" => true,
            "kafka" => false,
            other => {
                problems.push(format!(
                    "KAFKA_URL: `{}` is not a `kafka+ssl://host:port` or `kafka://host:port` address (scheme `{other}`)",
                    address_only(part)
                ));
                continue;
            }
        };
        let address = address.trim_end_matches('/');
        if address.is_empty() || address.contains(['/', '@', '?']) || !address.contains(':') {
            problems.push(format!(
                "KAFKA_URL: `{}` is not a `host:port` address",
                address_only(part)
            ));
            continue;
        }
        schemes.push(tls);
        brokers.push(address.to_string());
    }
    if brokers.is_empty() && problems.is_empty() {
        problems.push("KAFKA_URL holds no broker address".into());
    }
    let tls = schemes.first().copied().unwrap_or(true);
    if schemes.iter().any(|s| *s != tls) {
        problems.push(
            "KAFKA_URL mixes `kafka://` and `kafka+ssl://` brokers; one cluster speaks one protocol"
                .into(),
        );
    }
    let mut options = Vec::new();
    if tls {
        options.push(("security.protocol".to_string(), "ssl".to_string()));
        for (name, option) in [
            ("KAFKA_TRUSTED_CERT", "ssl.ca.pem"),
            ("KAFKA_CLIENT_CERT", "ssl.certificate.pem"),
            ("KAFKA_CLIENT_CERT_KEY", "ssl.key.pem"),
        ] {
            match var(name) {
                Some(pem) if pem.contains("-----BEGIN ") => {
                    options.push((option.to_string(), pem.trim().to_string()))
                }
                Some(_) => problems.push(format!(
                    "{name} does not hold PEM text (no `-----BEGIN` line)"
                )),
                None => problems.push(format!(
                    "KAFKA_URL names `kafka+ssl://` brokers but {name} is not set"
                )),
            }
        }
        // The brokers' certificates do not name their host: the chain is
        // verified, the host name is not (Heroku's own client helpers do
        // the same).
        options.push((
            "ssl.endpoint.identification.algorithm".to_string(),
            "none".to_string(),
        ));
    } else {
        options.push(("security.protocol".to_string(), "plaintext".to_string()));
    }
    if problems.is_empty() {
        Ok(Provided {
            brokers: brokers.join(","),
            options,
            prefix: var("KAFKA_PREFIX").map(|p| p.trim().to_string()),
        })
    } else {
        Err(problems)
    }
}

/// The host and port of a URL part, without any user or password in it.
fn address_only(part: &str) -> String {
    let rest = part.split_once("://").map_or(part, |(_, r)| r);
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heroku_env(vars: &[(&str, &str)]) -> Result<Provided, Vec<String>> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(Provider::Heroku, &move |n| {
            vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn a_plain_url_needs_no_certificates() {
        let p =
            heroku_env(&[("KAFKA_URL", "kafka://10.0.0.1:9092,kafka://10.0.0.2:9092")]).unwrap();
        assert_eq!(p.brokers, "10.0.0.1:9092,10.0.0.2:9092");
        assert_eq!(
            p.options,
            vec![("security.protocol".to_string(), "plaintext".to_string())]
        );
        assert_eq!(p.prefix, None);
    }

    #[test]
    fn missing_or_mixed_variables_are_named_without_their_values() {
        let e = heroku_env(&[]).unwrap_err();
        assert!(e[0].contains("KAFKA_URL, which is not set"), "{e:?}");
        let e = heroku_env(&[
            ("KAFKA_URL", "kafka+ssl://a:9096,kafka://b:9092"),
            ("KAFKA_TRUSTED_CERT", "not pem secret-ca"),
        ])
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("mixes"), "{all}");
        assert!(
            all.contains("KAFKA_TRUSTED_CERT does not hold PEM"),
            "{all}"
        );
        assert!(all.contains("KAFKA_CLIENT_CERT is not set"), "{all}");
        assert!(all.contains("KAFKA_CLIENT_CERT_KEY is not set"), "{all}");
        assert!(!all.contains("secret-ca"), "{all}");
        let e = heroku_env(&[("KAFKA_URL", "https://user:pw@host:1")]).unwrap_err();
        assert!(e[0].contains("***@host:1") && !e[0].contains("pw"), "{e:?}");
    }

    #[test]
    fn debug_shows_option_names_only() {
        let p = Provided {
            brokers: "b:1".into(),
            options: vec![("ssl.key.pem".into(), "-----BEGIN KEY----- s3cr3t".into())],
            prefix: None,
        };
        let shown = format!("{p:?}");
        assert!(shown.contains("ssl.key.pem") && !shown.contains("s3cr3t"));
    }
}
