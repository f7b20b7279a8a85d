//! Bad pipelines.yaml files and the exact messages a user gets for them.

use pgchain::config::Config;
use std::path::Path;

const GOOD_HEAD: &str = "kafka:\n  brokers: k:9092\npipelines:\n";

fn problems(text: &str) -> Vec<String> {
    let env = |name: &str| match name {
        "SET" => Some("value".to_string()),
        _ => None,
    };
    match Config::from_text(text, Path::new("pipelines.yaml"), env) {
        Ok(_) => vec![],
        Err(e) => e.problems,
    }
}

#[test]
fn bad_files_name_file_line_and_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "kafka:\n  brokers: k:9092\npipelines:\n  p:\n    topic: t\n    chian: [a.b]\n",
            &[
                "pipelines.yaml:6: pipelines.p: unknown field `chian`, expected one of `topic`, `topics`, `format`, `table`, `key`, `system`, `tombstones`, `unavailable_placeholder`, `chain`, `retries`, `ogg`",
            ],
        ),
        (
            "unknown top-level key",
            "kafka:\n  brokers: k:9092\npipelnes: {}\n",
            &[
                "pipelines.yaml:3: unknown field `pipelnes`, expected one of `kafka`, `postgres`, `pipelines`, `dead_letters`, `monitoring`, `alerts`, `procedures`, `schema_registry`",
            ],
        ),
        (
            "unknown format",
            "kafka:\n  brokers: k:9092\npipelines:\n  p:\n    topic: t\n    format: avro\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:6: pipelines.p.format: unknown variant `avro`, expected one of `debezium`, `debezium-flat`, `ogg`, `json`",
            ],
        ),
        (
            "unavailable placeholders",
            "kafka:\n  brokers: k:9092\npipelines:\n  a:\n    topic: t\n    format: debezium-flat\n    unavailable_placeholder: '<toasted>'\n    table: x\n    chain: [a.b]\n  b:\n    topic: t\n    format: debezium-flat\n    table: y\n    chain: [a.b]\n  c:\n    topic: o\n    format: ogg\n    unavailable_placeholder: ''\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:10: topic `t` has unavailable_placeholder `<toasted>` in pipeline `a` and unset in `b`; pipelines sharing a topic need the same",
                "pipelines.yaml:18: pipeline `c`: `unavailable_placeholder` applies to formats debezium and debezium-flat only",
                "pipelines.yaml:18: pipeline `c`: `unavailable_placeholder` is empty",
            ],
        ),
        (
            "GoldenGate settings",
            "kafka:\n  brokers: k:9092\npipelines:\n  a:\n    topic: t\n    format: ogg\n    table: A\n    ogg:\n      op_ts_zone: Mars/Olympus\n      op_types: {insert: X, update: X}\n    chain: [a.b]\n  b:\n    topic: t\n    format: ogg\n    table: B\n    chain: [a.b]\n  c:\n    topic: c\n    ogg: {}\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:9: pipeline `a`: ogg.op_ts_zone: `Mars/Olympus` is not a zone: write UTC, an IANA name (Europe/Berlin) or an offset (+02:00)",
                "pipelines.yaml:10: pipeline `a`: `ogg.op_types` gives code `X` to two operations",
                "pipelines.yaml:19: pipeline `c`: `ogg:` applies to `format: ogg` only",
                "pipelines.yaml:12: pipelines `a` and `b` read topic `t` with different `ogg:` settings; one topic is written one way",
            ],
        ),
        (
            "schema registry",
            "kafka:\n  brokers: k:9092\npipelines:\n  p: {topic: t, chain: [a.b]}\nschema_registry:\n  url: https://key:hunter2@registry.example:8081\n  username: key\n",
            &[
                "pipelines.yaml:6: `schema_registry.url` holds credentials: give them as `schema_registry.username` and `password` (from `${VAR}`), so they stay out of logs",
                "pipelines.yaml:7: `schema_registry.username` is set without `password`",
            ],
        ),
        (
            "schema registry url",
            "kafka:\n  brokers: k:9092\npipelines:\n  p: {topic: t, chain: [a.b]}\nschema_registry: {url: 'registry:8081', password: hunter2}\n",
            &[
                "pipelines.yaml:5: `schema_registry.url` must be an http:// or https:// URL, not registry://",
                "pipelines.yaml:5: `schema_registry.password` is set without `username`",
            ],
        ),
        (
            "missing chain",
            "kafka:\n  brokers: k:9092\npipelines:\n  p:\n    topic: t\n",
            &["pipelines.yaml:5: pipelines.p: missing field `chain`"],
        ),
        (
            "unset variable",
            "kafka:\n  brokers: ${NOPE}\npipelines:\n  p: {topic: '${ALSO_NOPE}', chain: [a.b]}\n",
            &[
                "pipelines.yaml:2: environment variable `NOPE` is not set (write ${NOPE:-default} to give a default)",
                "pipelines.yaml:4: environment variable `ALSO_NOPE` is not set (write ${ALSO_NOPE:-default} to give a default)",
            ],
        ),
        (
            "every semantic problem at once",
            "kafka:\n  brokers: ''\n  options:\n    enable.auto.commit: false\npipelines:\n  a:\n    topic: t\n    chain: []\n  b:\n    topic: t\n    chain:\n      - l1.ok\n      - L1.Bad\n      - noschema\n  c:\n    topic: j\n    format: json\n    chain: [x.y]\n",
            &[
                "pipelines.yaml:2: `kafka.brokers` is empty (give `host:port,…`, or `provider: heroku` to read KAFKA_URL)",
                "pipelines.yaml:4: kafka option `enable.auto.commit` is set by pgchain itself (exactly-once depends on it)",
                "pipelines.yaml:8: pipeline `a` has an empty chain",
                "pipelines.yaml:13: pipeline `b`: step `L1.Bad` is not `schema.procedure` (lower-case letters, digits and `_`, each part at most 63 bytes)",
                "pipelines.yaml:14: pipeline `b`: step `noschema` is not `schema.procedure` (lower-case letters, digits and `_`, each part at most 63 bytes)",
                "pipelines.yaml:9: pipelines `a` and `b` both route topic `t` (every table)",
                "pipelines.yaml:17: pipeline `c`: format `json` needs `key:` (the key columns of the row)",
            ],
        ),
        (
            "auto.offset.reset is pgchain's",
            "kafka:\n  brokers: k:9092\n  on_gap: skip\n  options:\n    auto.offset.reset: earliest\npipelines:\n  p: {topic: t, chain: [a.b]}\n",
            &[
                "pipelines.yaml:5: kafka option `auto.offset.reset` is set by pgchain itself (a reset must never skip events silently): `kafka.start_from` says where a partition the ledger does not know starts, `kafka.on_gap` what happens when retention deleted events not yet applied",
            ],
        ),
        (
            "an unknown on_gap",
            "kafka:\n  brokers: k:9092\n  on_gap: ignore\npipelines:\n  p: {topic: t, chain: [a.b]}\n",
            &[
                "pipelines.yaml:3: kafka.on_gap: unknown variant `ignore`, expected `stop` or `skip`",
            ],
        ),
        (
            "one topic, two formats",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: t\n    table: x\n    chain: [a.b]\n  b:\n    topic: t\n    table: y\n    format: ogg\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:11: topic `t` is read as Debezium by pipeline `a` and as Ogg by `b`; one topic has one format",
            ],
        ),
        (
            "same table routed twice",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    topics: [t, u]\n    table: CRM.CONTACT\n    chain: [a.b]\n  b:\n    topic: u\n    table: crm.contact\n    chain: [a.b]\n",
            &["pipelines.yaml:8: pipelines `a` and `b` both route topic `u` (table `crm.contact`)"],
        ),
        (
            "tombstones delivered where they cannot be routed",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: t\n    table: x\n    tombstones: deliver\n    chain: [a.b]\n  b:\n    topic: t\n    table: y\n    chain: [a.b]\n  c:\n    topic: o\n    format: ogg\n    tombstones: deliver\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:7: pipeline `a`: `tombstones: deliver` needs topic `t` to itself (a tombstone names no table to route by)",
                "pipelines.yaml:16: pipeline `c`: `tombstones: deliver` applies to Debezium topics only",
            ],
        ),
        (
            "two filters that take one table",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: t\n    format: ogg\n    table: customer\n    chain: [a.b]\n  b:\n    topic: t\n    format: ogg\n    table: CRM.Customer\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:12: pipelines `a` (`customer`) and `b` (`crm.customer`) both take table `crm.customer` on topic `t`; qualify both or neither",
            ],
        ),
        (
            "bad pool settings",
            "kafka:\n  brokers: k\npostgres:\n  pool_size: 0\n  max_batch: 0\npipelines:\n  a:\n    topic: t\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:4: `postgres.pool_size` must be at least 1",
                "pipelines.yaml:5: `postgres.max_batch` must be at least 1",
            ],
        ),
        (
            "dead letters into a topic a pipeline reads",
            "kafka:\n  brokers: k\ndead_letters:\n  topic: 'in'\npipelines:\n  a:\n    topic: in\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:4: dead letters of topic `in` would go to `in`, which a pipeline reads; use a topic of its own (e.g. `{topic}.dlq`)",
            ],
        ),
        (
            "no attempts",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: in\n    chain: [a.b]\n    retries:\n      data:\n        attempts: 0\n",
            &["pipelines.yaml:9: pipeline `a`: `retries.data.attempts` must be at least 1"],
        ),
        (
            "bad duration",
            "kafka:\n  brokers: k\ndead_letters:\n  recovery_interval: soon\npipelines:\n  a:\n    topic: in\n    chain: [a.b]\n",
            &[
                "pipelines.yaml:4: dead_letters: `soon` is not a duration (like 250ms, 5s, 5m or 1h)",
            ],
        ),
        (
            "no topic",
            "kafka:\n  brokers: k\npipelines:\n  a:\n    chain: [a.b]\n",
            &["pipelines.yaml:4: pipeline `a` has no `topic` or `topics`"],
        ),
        (
            "syntax error",
            "kafka:\n  brokers: 'k\npipelines: {}\n",
            &[
                "pipelines.yaml:4: found unexpected end of stream at line 4 column 1, while scanning a quoted scalar at line 2 column 12",
            ],
        ),
    ];
    for (what, text, want) in cases {
        assert_eq!(problems(text), *want, "case: {what}");
    }
}

#[test]
fn a_good_file_keeps_declaration_order_and_fills_the_environment() {
    let text = format!(
        "{GOOD_HEAD}  z:\n    topic: ${{SET}}\n    chain: [a.b]\n  a:\n    topic: t2\n    chain: [a.b, c.d]\n"
    );
    let config = Config::from_text(&text, Path::new("p.yaml"), |n| {
        (n == "SET").then(|| "orders".to_string())
    })
    .unwrap();
    assert_eq!(config.pipelines.keys().collect::<Vec<_>>(), ["z", "a"]);
    assert_eq!(config.pipelines["z"].topic.as_deref(), Some("orders"));
    assert_eq!(config.kafka.group_id, "pgchain");
    assert_eq!(
        config.postgres.url,
        "postgres://postgres@127.0.0.1:5432/postgres"
    );
}

#[test]
fn topics_are_listed_once_in_declaration_order() {
    let text = format!(
        "{GOOD_HEAD}  a:\n    topic: t\n    table: x\n    chain: [a.b]\n  b:\n    topics: [s, u]\n    chain: [a.b]\n  c:\n    topic: t\n    table: y\n    chain: [a.b]\n"
    );
    let config = Config::from_text(&text, Path::new("p.yaml"), |_| None).unwrap();
    assert_eq!(config.topics(), ["t", "s", "u"]);
}

#[test]
fn the_shipped_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, pipelines, procedures) in [
        ("pipelines.yaml", 3, 9),
        ("examples/campaign/pipelines.yaml", 3, 3),
        ("examples/blank/pipelines.yaml", 1, 1),
        ("examples/people/pipelines.yaml", 3, 5),
    ] {
        let config = Config::load(&root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.pipelines.len(), pipelines, "{file}");
        assert_eq!(config.procedures.len(), procedures, "{file}");
    }
}

#[test]
fn yaml_merge_keys_share_settings_between_pipelines() {
    let text = format!(
        "{GOOD_HEAD}  a: &base\n    topic: t\n    format: ogg\n    retries: {{data: {{attempts: 7}}}}\n    chain: [a.b]\n  b:\n    <<: *base\n    topic: u\n    chain: [a.c]\n"
    );
    let config = Config::from_text(&text, Path::new("p.yaml"), |_| None).unwrap();
    let b = &config.pipelines["b"];
    assert_eq!(b.topic.as_deref(), Some("u"), "a key of its own wins");
    assert_eq!(b.chain, ["a.c"]);
    assert_eq!(
        b.format,
        pgchain::config::Format::Ogg,
        "merged from the anchor"
    );
    assert_eq!(b.retries.data.attempts, 7);
    assert_eq!(config.topics(), ["t", "u"]);

    // An unknown key reached through a merge is still an error with a line.
    let bad = text.replace("format: ogg", "formt: ogg");
    let err = Config::from_text(&bad, Path::new("p.yaml"), |_| None).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0].starts_with("p.yaml:") && err.problems[0].contains("unknown field `formt`"),
        "{:?}",
        err.problems
    );
}

#[test]
fn the_static_member_id_is_off_by_default_explicit_or_from_the_host_name() {
    let load = |kafka: &str| {
        let text = format!(
            "kafka:\n  brokers: k:9092\n{kafka}pipelines:\n  p: {{topic: t, chain: [a.b]}}\n"
        );
        Config::from_text(&text, Path::new("pipelines.yaml"), |_| None)
            .map(|c| c.kafka.group_instance_id().unwrap())
            .map_err(|e| e.problems)
    };
    assert_eq!(load(""), Ok(None), "off unless asked for");
    assert_eq!(
        load("  instance_id: pgchain-1\n"),
        Ok(Some("pgchain-1".to_string()))
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        load("  instance_id: \"{hostname}\"\n"),
        Ok(Some(host.clone()))
    );
    assert_eq!(
        load("  instance_id: \"pgchain-{hostname}-b\"\n"),
        Ok(Some(format!("pgchain-{host}-b")))
    );
    assert_eq!(
        load("  instance_id: pgchain-1\n  options:\n    group.instance.id: other\n"),
        Err(vec![
            "pipelines.yaml:3: `kafka.instance_id` and kafka option `group.instance.id` both set the consumer's static member id; keep one".to_string()
        ])
    );
    assert_eq!(
        load("  options:\n    group.instance.id: other\n"),
        Ok(None),
        "the option alone passes through to librdkafka as any other"
    );
    assert_eq!(
        load("  instance_id: {hostname}\n"),
        Err(vec![
            "pipelines.yaml:3: `kafka.instance_id: {hostname}` needs quotes, `\"{hostname}\"` (unquoted, YAML reads it as a mapping)".to_string()
        ])
    );
    assert_eq!(
        load("  instance_id: \"{host}-1\"\n"),
        Err(vec![
            "pipelines.yaml:3: `kafka.instance_id` `{host}-1`: `{` is not allowed; use letters, digits, `.`, `_`, `-` and `{hostname}`".to_string()
        ])
    );
    assert_eq!(
        load("  instance_id: ''\n"),
        Err(vec![
            "pipelines.yaml:3: `kafka.instance_id` is empty".to_string()
        ])
    );
}

#[test]
fn the_schema_registry_password_comes_from_the_environment_and_is_never_shown() {
    let text = "kafka:\n  brokers: k:9092\npipelines:\n  p: {topic: t, chain: [a.b]}\nschema_registry:\n  url: https://registry.example:8081/\n  username: ${USER}\n  password: ${PASS}\n";
    let env = |name: &str| match name {
        "USER" => Some("api-key".to_string()),
        "PASS" => Some("hunter2".to_string()),
        _ => None,
    };
    let config = Config::from_text(text, Path::new("pipelines.yaml"), env).unwrap();
    let registry = config.schema_registry.as_ref().unwrap();
    assert_eq!(registry.username.as_deref(), Some("api-key"));
    assert_eq!(registry.password.as_deref(), Some("hunter2"));
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("password: Some(\"***\")"), "{shown}");
}
