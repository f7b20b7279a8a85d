//! Managed Kafka: `kafka.provider: heroku` from Heroku-shaped config vars
//! (the names and shapes of Heroku's Apache Kafka add-on: `KAFKA_URL` as a
//! comma list of `kafka+ssl://host:port`, PEM text in `KAFKA_TRUSTED_CERT`,
//! `KAFKA_CLIENT_CERT`, `KAFKA_CLIENT_CERT_KEY`, two CAs in the bundle
//! during a rotation, `KAFKA_PREFIX` on multi-tenant plans), a real TLS
//! handshake with a client certificate, the prefix on every name through
//! librdkafka's mock cluster, and the README's recipes for other managed
//! clusters.

mod common;
#[path = "common/tls.rs"]
mod tls;

use common::*;
use pgchain::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const YAML: &str = "kafka:\n  provider: heroku\n  group_id: unify\npipelines:\n  customers:\n    topic: customers\n    chain: [t.record]\n";

fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// The PEM bodies' lines (base64) of everything secret or certificate-like
/// in `vars`: none may show in what pgchain prints.
fn pem_lines(vars: &[(&str, String)]) -> Vec<String> {
    vars.iter()
        .filter(|(k, _)| k.contains("CERT"))
        .flat_map(|(_, v)| {
            v.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(String::from)
        })
        .filter(|l| l.len() > 20)
        .collect()
}

fn assert_no_secrets(printed: &str, vars: &[(&str, String)]) {
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    for line in pem_lines(vars) {
        assert!(
            !printed.contains(&line),
            "certificate or key text printed: {printed}"
        );
    }
}

struct Pki {
    ca: tls::Issued,
    retiring_ca: tls::Issued,
    client: tls::Issued,
}

fn pki() -> Pki {
    let ca = tls::authority("pgchain-test-ca");
    let client = ca.issue("pgchain-heroku-client", false, 2);
    Pki {
        retiring_ca: tls::authority("pgchain-test-retiring-ca"),
        ca,
        client,
    }
}

/// Heroku's config vars for `url`, the bundle holding the retiring CA first.
fn heroku_vars(pki: &Pki, url: &str, trusted: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_URL", url.to_string()),
        ("KAFKA_TRUSTED_CERT", trusted.to_string()),
        ("KAFKA_CLIENT_CERT", pki.client.cert_pem()),
        ("KAFKA_CLIENT_CERT_KEY", pki.client.key_pem()),
    ]
}

#[test]
fn a_heroku_environment_becomes_the_librdkafka_settings_and_librdkafka_takes_them() {
    let pki = pki();
    let bundle = format!("{}{}", pki.retiring_ca.cert_pem(), pki.ca.cert_pem());
    let mut vars = heroku_vars(
        &pki,
        "kafka+ssl://ec2-3-81-1-10.compute-1.amazonaws.com:9096,kafka+ssl://ec2-3-81-1-11.compute-1.amazonaws.com:9096,kafka+ssl://ec2-3-81-1-12.compute-1.amazonaws.com:9096",
        &bundle,
    );
    vars.push(("KAFKA_PREFIX", "columbia-12345.".to_string()));
    let config = Config::from_text(YAML, Path::new("pipelines.yaml"), lookup(&vars)).unwrap();
    assert_eq!(
        config.kafka.brokers,
        "ec2-3-81-1-10.compute-1.amazonaws.com:9096,ec2-3-81-1-11.compute-1.amazonaws.com:9096,ec2-3-81-1-12.compute-1.amazonaws.com:9096"
    );
    let options = config.kafka_options();
    let expected: Vec<(String, String)> = [
        ("security.protocol", "ssl".to_string()),
        ("ssl.ca.pem", bundle.trim().to_string()),
        (
            "ssl.certificate.pem",
            pki.client.cert_pem().trim().to_string(),
        ),
        ("ssl.key.pem", pki.client.key_pem().trim().to_string()),
        ("ssl.endpoint.identification.algorithm", "none".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(options, expected);
    assert_eq!(config.wire_group(), "columbia-12345.unify");
    assert_eq!(
        config.prefix().wire("customers"),
        "columbia-12345.customers"
    );
    assert_eq!(
        config.cluster().prefix.user("columbia-12345.customers.dlq"),
        "customers.dlq"
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("PRIVATE KEY"), "Debug shows the key");

    // librdkafka reads every PEM when the client is created.
    let mut cc = ClientConfig::new();
    for (k, v) in &options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", config.wire_group());
    let created: Result<BaseConsumer, _> = cc.create();
    assert!(created.is_ok(), "librdkafka refused the settings");
    // …and refuses a key that is not one, without echoing it.
    cc.set(
        "ssl.key.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----",
    );
    let refused = cc
        .create::<BaseConsumer>()
        .err()
        .expect("a broken key is refused");
    let said = pgchain::kafka::redact_kafka_error(refused);
    assert!(!said.contains("bm90IGEga2V5"), "{said}");
}

#[test]
fn a_provider_with_a_missing_variable_or_beside_brokers_is_a_config_error_naming_the_line() {
    let pki = pki();
    let mut vars = heroku_vars(&pki, "kafka+ssl://h:9096", &pki.ca.cert_pem());
    vars.retain(|(k, _)| *k != "KAFKA_CLIENT_CERT_KEY");
    let e = Config::from_text(YAML, Path::new("p.yaml"), lookup(&vars)).unwrap_err();
    assert_eq!(
        e.problems,
        vec!["p.yaml:2: kafka.provider heroku: KAFKA_URL names `kafka+ssl://` brokers but KAFKA_CLIENT_CERT_KEY is not set".to_string()]
    );
    let both = YAML.replace(
        "  provider: heroku\n",
        "  provider: heroku\n  brokers: b:9092\n",
    );
    let vars = heroku_vars(&pki, "kafka+ssl://h:9096", &pki.ca.cert_pem());
    let e = Config::from_text(&both, Path::new("p.yaml"), lookup(&vars)).unwrap_err();
    assert!(
        e.problems[0].starts_with("p.yaml:3: `kafka.brokers` and `kafka.provider: heroku`"),
        "{e}"
    );
    assert_no_secrets(&e.to_string(), &vars);
}

/// A PEM substituted into `kafka.options` through `${VAR}` (the way to give
/// certificates without a provider) reaches librdkafka whole.
#[test]
fn a_multi_line_pem_in_a_variable_reaches_the_option_whole() {
    let pki = pki();
    let yaml = "kafka:\n  brokers: b:9093\n  options:\n    security.protocol: ssl\n    ssl.ca.pem: ${CA}\n    ssl.certificate.pem: ${CERT}\n    ssl.key.pem: ${KEY}\npipelines:\n  c:\n    topic: c\n    chain: [t.record]\n";
    let vars = [
        ("CA", pki.ca.cert_pem()),
        ("CERT", pki.client.cert_pem()),
        ("KEY", pki.client.key_pem()),
    ];
    let config = Config::from_text(yaml, Path::new("p.yaml"), lookup(&vars)).unwrap();
    let options = config.kafka_options();
    assert_eq!(options[1], ("ssl.ca.pem".to_string(), pki.ca.cert_pem()));
    assert_eq!(
        options[3],
        ("ssl.key.pem".to_string(), pki.client.key_pem())
    );
    let mut cc = ClientConfig::new();
    for (k, v) in &options {
        cc.set(k, v);
    }
    assert!(
        cc.set("bootstrap.servers", "b:9093")
            .create::<BaseConsumer>()
            .is_ok()
    );
}

fn check(dir: &Path, vars: &[(&str, String)]) -> (Option<i32>, String) {
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, YAML).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgchain"));
    cmd.args(["check", "--no-db", "-c", path.to_str().unwrap()]);
    for name in [
        "KAFKA_URL",
        "KAFKA_TRUSTED_CERT",
        "KAFKA_CLIENT_CERT",
        "KAFKA_CLIENT_CERT_KEY",
        "KAFKA_PREFIX",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

#[test]
fn the_heroku_certificates_complete_a_tls_handshake_and_check_names_a_wrong_ca() {
    let pki = pki();
    // The broker's certificate names a host that is not the address it
    // listens on, as Heroku's do: only the chain can be verified.
    let broker_cert = pki.ca.issue("kafka-broker.heroku.invalid", true, 3);
    let kafka = Kafka::new(&[("tenant-7.customers", 1)]);
    let upstream = kafka.brokers.split(',').next().unwrap().to_string();
    let broker = tls::TlsBroker::start(&broker_cert, &pki.ca.cert, &upstream);
    let url = format!("kafka+ssl://{}", broker.addr);
    let dir = temp_dir("heroku-check");

    // The bundle holds the retiring CA first, as during a rotation.
    let bundle = format!("{}{}", pki.retiring_ca.cert_pem(), pki.ca.cert_pem());
    let vars = heroku_vars(&pki, &url, &bundle);
    let (_, printed) = check(&dir, &vars);
    // The handshake completed with the client certificate presented
    // (librdkafka may open more than one connection). What `check` says
    // after it is about the broker the mock cluster advertises, its plain
    // listener; a real cluster advertises its TLS one, and the prefix test
    // below shows `check` answering through the mock cluster.
    let clients = broker.clients.lock().unwrap().clone();
    assert!(!clients.is_empty(), "no handshake completed: {printed}");
    assert!(
        clients.iter().all(|c| c == "pgchain-heroku-client"),
        "{clients:?}"
    );
    assert!(!printed.contains("certificate verify failed"), "{printed}");
    assert_no_secrets(&printed, &vars);

    // The retiring CA alone cannot verify the broker.
    let before = broker.clients.lock().unwrap().len();
    let vars = heroku_vars(&pki, &url, &pki.retiring_ca.cert_pem());
    let started = Instant::now();
    let (code, printed) = check(&dir, &vars);
    assert_eq!(code, Some(1), "{printed}");
    let file = dir.join("pipelines.yaml");
    assert!(
        printed.starts_with(&format!(
            "{}:2: cannot reach the Kafka brokers {}: ",
            file.display(),
            broker.addr
        )),
        "{printed}"
    );
    assert!(printed.contains("certificate verify failed"), "{printed}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a refusal waits out the timeout"
    );
    assert_eq!(broker.clients.lock().unwrap().len(), before);
    assert_no_secrets(&printed, &vars);
}

#[test]
fn check_names_brokers_that_do_not_answer_within_its_timeout() {
    let pki = pki();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir("heroku-check-down");
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, YAML).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args([
            "check",
            "--no-db",
            "--kafka-timeout",
            "2s",
            "-c",
            path.to_str().unwrap(),
        ])
        .envs(heroku_vars(
            &pki,
            &format!("kafka+ssl://127.0.0.1:{port}"),
            &pki.ca.cert_pem(),
        ))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.starts_with(&format!(
            "{}:2: cannot reach the Kafka brokers 127.0.0.1:{port}: ",
            path.display()
        )),
        "{printed}"
    );
}

/// Every record of `topic` (all partitions).
fn read_all(brokers: &str, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        expected += high - low;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while (out.len() as i64) < expected {
        assert!(start.elapsed() < Duration::from_secs(30), "reading {topic}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_prefix_every_name_on_the_brokers_is_prefixed_and_every_name_pgchain_shows_is_not() {
    let prefix = "tenant-7.";
    let kafka = Kafka::new(&[("tenant-7.items", 2)]);
    let db = TestDb::new("heroku_prefix").await;
    db.exec(TEST_STEPS).await;
    let yaml = format!(
        "kafka:\n  provider: heroku\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
         postgres:\n  url: {}\n\
         pipelines:\n  items:\n    topic: items\n    chain: [t.record, t.poison]\n\
         \x20   retries: {{data: {{attempts: 1}}}}\n",
        db.url
    );
    // Heroku's plain listener (`kafka://`), so the mock cluster serves it.
    let vars = vec![
        ("KAFKA_URL", format!("kafka://{}", kafka.brokers)),
        ("KAFKA_PREFIX", prefix.to_string()),
    ];
    let config = Config::from_text(&yaml, Path::new("test.yaml"), lookup(&vars)).unwrap();
    let mut records: Vec<_> = (1..=10)
        .map(|id| {
            let value = json!({"op": "c", "after": {"id": id, "version": 1, "poison": false}, "source": {"table": "item", "ts_ms": 1}});
            record("tenant-7.items", Some(&json!({"id": id}).to_string()), Some(&value.to_string()))
        })
        .collect();
    let poison = json!({"op": "c", "after": {"id": 11, "version": 1, "poison": true}, "source": {"table": "item", "ts_ms": 1}});
    records.push(record(
        "tenant-7.items",
        Some(r#"{"id":11}"#),
        Some(&poison.to_string()),
    ));
    kafka.produce(records).await;

    let running = start(config);
    let started = Instant::now();
    while db.i64("select count(*) from t.state").await < 10
        || db
            .i64("select count(*) from pgchain.dead_letters where published_at is not null")
            .await
            < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events did not flow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;

    // PostgreSQL holds the names as written.
    assert_eq!(
        db.strings("select distinct topic || ' ' || group_id from pgchain.offsets")
            .await,
        vec!["items g1"]
    );
    assert_eq!(
        db.strings("select topic || ' ' || dlq_topic from pgchain.dead_letters")
            .await,
        vec!["items items.dlq"]
    );
    assert_eq!(
        db.i64("select sum(applied_through + 1)::bigint from pgchain.offsets")
            .await,
        11
    );

    // The brokers hold the prefixed ones.
    let brokers = kafka.brokers.clone();
    let (dlq, names, committed) = tokio::task::spawn_blocking(move || {
        let dlq = read_all(&brokers, "tenant-7.items.dlq");
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "tenant-7.g1")
            .create()
            .unwrap();
        let names: Vec<String> = c
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap()
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("tenant-7.items", 0);
        tpl.add_partition("tenant-7.items", 1);
        let committed: i64 = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        (dlq, names, committed)
    })
    .await
    .unwrap();
    assert_eq!(dlq.len(), 1);
    let topic_header = dlq[0]
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "pgchain.topic")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).to_string());
    assert_eq!(topic_header.as_deref(), Some("items"));
    assert_eq!(dlq[0].key(), Some(&br#"{"id":11}"#[..]));
    let unprefixed: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with(prefix) && !n.starts_with("__"))
        .collect();
    assert!(
        unprefixed.is_empty(),
        "topics without the prefix on the brokers: {unprefixed:?}"
    );
    assert_eq!(committed, 11, "the prefixed group's committed offsets");

    // `check` finds the topic under its prefixed name, and warns without it.
    let dir = temp_dir("heroku-status");
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let check = |vars: &[(&str, String)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
            .args(["check", "--no-db", "-c", path.to_str().unwrap()])
            .env_remove("KAFKA_PREFIX")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, printed) = check(&vars);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.starts_with(&format!(
            "kafka: 1 broker(s) answered at {}\n",
            kafka.brokers
        )),
        "{printed}"
    );
    assert!(!printed.contains("warning"), "{printed}");
    let (code, printed) = check(&vars[..1]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("warning: topic `items` does not exist yet; `run` waits for it"),
        "{printed}"
    );

    // `status` asks the brokers with the prefix and shows the names as written.
    let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["status", "--json", "-c", path.to_str().unwrap()])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert_eq!(row["topic"], "items", "{row}");
        assert_eq!(row["lag"], 0, "{row}");
    }
    let dead: i64 = rows.iter().map(|r| r["dead"].as_i64().unwrap()).sum();
    assert_eq!(dead, 1);
}

/// The YAML block after `<!-- recipe: NAME -->` in the README.
fn recipe(readme: &str, name: &str) -> String {
    let marker = format!("<!-- recipe: {name} -->\n```yaml\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("no recipe {name}"))
        + marker.len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

#[test]
fn the_readme_recipes_produce_these_settings_and_librdkafka_takes_them() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let pki = pki();
    // Aiven's three files sit beside pipelines.yaml, which is not where
    // the command runs.
    let dir = temp_dir("recipes");
    std::fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
    std::fs::write(dir.join("service.cert"), pki.client.cert_pem()).unwrap();
    std::fs::write(dir.join("service.key"), pki.client.key_pem()).unwrap();
    let ca_file = dir.join("kafka-ca.pem");
    std::fs::write(&ca_file, pki.ca.cert_pem()).unwrap();
    let at = |f: &str| dir.join(f).display().to_string();
    let vars = vec![
        ("CONFLUENT_BOOTSTRAP", "pkc-41wq6.eu-west-2.aws.confluent.cloud:9092".to_string()),
        ("CONFLUENT_API_KEY", "KEYID".to_string()),
        ("CONFLUENT_API_SECRET", "s3cr3t-confluent".to_string()),
        ("MSK_BOOTSTRAP", "b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9096,b-2.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9096".to_string()),
        ("MSK_USERNAME", "pgchain".to_string()),
        ("MSK_PASSWORD", "s3cr3t-msk".to_string()),
        ("AIVEN_KAFKA_URI", "kafka-demo-project.aivencloud.com:12345".to_string()),
        ("KAFKA_PASSWORD", "s3cr3t-self".to_string()),
        ("KAFKA_URL", "kafka+ssl://ec2-3-81-1-10.compute-1.amazonaws.com:9096".to_string()),
        ("KAFKA_TRUSTED_CERT", pki.ca.cert_pem()),
        ("KAFKA_CLIENT_CERT", pki.client.cert_pem()),
        ("KAFKA_CLIENT_CERT_KEY", pki.client.key_pem()),
    ];
    let o = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (ca, cert, key) = (
        pki.ca.cert_pem(),
        pki.client.cert_pem(),
        pki.client.key_pem(),
    );
    // (recipe, brokers, librdkafka options)
    type Case<'a> = (&'a str, &'a str, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        (
            "heroku",
            "ec2-3-81-1-10.compute-1.amazonaws.com:9096",
            o(&[
                ("security.protocol", "ssl"),
                ("ssl.ca.pem", ca.trim()),
                ("ssl.certificate.pem", cert.trim()),
                ("ssl.key.pem", key.trim()),
                ("ssl.endpoint.identification.algorithm", "none"),
            ]),
        ),
        (
            "confluent",
            "pkc-41wq6.eu-west-2.aws.confluent.cloud:9092",
            o(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", "KEYID"),
                ("sasl.password", "s3cr3t-confluent"),
            ]),
        ),
        (
            "msk",
            "b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9096,b-2.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9096",
            o(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "pgchain"),
                ("sasl.password", "s3cr3t-msk"),
            ]),
        ),
        (
            "aiven",
            "kafka-demo-project.aivencloud.com:12345",
            vec![
                ("security.protocol".into(), "SSL".into()),
                ("ssl.ca.location".into(), at("ca.pem")),
                ("ssl.certificate.location".into(), at("service.cert")),
                ("ssl.key.location".into(), at("service.key")),
            ],
        ),
        (
            "self-hosted",
            "kafka1.internal:9093,kafka2.internal:9093",
            o(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-256"),
                ("sasl.username", "pgchain"),
                ("sasl.password", "s3cr3t-self"),
                ("ssl.ca.location", "/etc/pgchain/kafka-ca.pem"),
            ]),
        ),
    ];
    for (name, brokers, options) in cases {
        let yaml = format!(
            "{}pipelines:\n  customers:\n    topic: customers\n    chain: [t.record]\n",
            recipe(&readme, name)
        );
        let config = Config::from_text(&yaml, &dir.join("pipelines.yaml"), lookup(&vars))
            .unwrap_or_else(|e| panic!("recipe {name}: {e}"));
        assert_eq!(config.kafka.brokers, brokers, "recipe {name}");
        assert_eq!(config.kafka_options(), options, "recipe {name}");
        // librdkafka takes the settings (it reads certificate files and
        // PEM text when the client is created); the self-hosted CA path is
        // the reader's, so this machine's stands in for it.
        let mut cc = ClientConfig::new();
        for (k, v) in config.kafka_options() {
            let v = if v == "/etc/pgchain/kafka-ca.pem" {
                ca_file.display().to_string()
            } else {
                v
            };
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", config.wire_group());
        if let Err(e) = cc.create::<BaseConsumer>() {
            panic!(
                "recipe {name}: librdkafka refused it: {}",
                pgchain::kafka::redact_kafka_error(e)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_says_a_refused_handshake_without_any_certificate_or_key_in_its_log() {
    let pki = pki();
    let broker_cert = pki.ca.issue("kafka-broker.heroku.invalid", true, 3);
    let kafka = Kafka::new(&[("customers", 1)]);
    let upstream = kafka.brokers.split(',').next().unwrap().to_string();
    let broker = tls::TlsBroker::start(&broker_cert, &pki.ca.cert, &upstream);
    let db = TestDb::new("heroku_run_log").await;
    db.exec(TEST_STEPS).await;
    let dir = temp_dir("heroku-run-log");
    let path = dir.join("pipelines.yaml");
    std::fs::write(
        &path,
        YAML.replace(
            "kafka:\n",
            &format!("postgres:\n  url: {}\nkafka:\n", db.url),
        ),
    )
    .unwrap();
    let vars = heroku_vars(
        &pki,
        &format!("kafka+ssl://{}", broker.addr),
        &pki.retiring_ca.cert_pem(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (log, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let started = Instant::now();
    while !log.lock().unwrap().contains("certificate verify failed") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run never said why: {}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let printed = format!("{stdout}{}", log.lock().unwrap());
    assert_eq!(status.code(), Some(0), "{printed}");
    assert!(
        printed.contains(&format!("cannot reach the Kafka brokers {}", broker.addr)),
        "{printed}"
    );
    assert_no_secrets(&printed, &vars);
}

/// What `verify --repair` and the tools produce goes to the prefixed topic.
#[tokio::test(flavor = "multi_thread")]
async fn records_produced_for_a_prefixed_cluster_land_on_the_prefixed_topic() {
    let kafka = Kafka::new(&[("tenant-7.customers", 1)]);
    let cluster = pgchain::config::Cluster {
        brokers: kafka.brokers.clone(),
        options: Vec::new(),
        prefix: pgchain::config::Prefix::new("tenant-7."),
    };
    let records = vec![record("customers", Some("1"), Some("{}"))];
    tokio::task::spawn_blocking(move || pgchain::kafka::produce_on(&cluster, &records))
        .await
        .unwrap()
        .unwrap();
    let marks =
        pgchain::kafka::high_watermarks(&kafka.brokers, &["tenant-7.customers".to_string()])
            .unwrap();
    assert_eq!(marks.get(&("tenant-7.customers".to_string(), 0)), Some(&1));
}
