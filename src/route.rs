//! Routing: which pipeline's chain runs for a message.
//!
//! A topic has one format; several pipelines may share a topic when each
//! filters on a different source table (GoldenGate often writes many tables to
//! one topic). A pipeline with a table filter wins over one without.

use crate::config::{Config, Format, Tombstones};
use crate::decode::{self, DecodeOptions, Decoded};
use crate::event::{ChangeEvent, KafkaCoords, Op};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One pipeline as the dispatcher needs it.
#[derive(Debug)]
pub struct Route {
    pub pipeline: String,
    pub steps: Vec<String>,
    /// Retries per error class before an event leaves the partition's way.
    pub retries: crate::config::Retries,
    /// Lower-case `table` or `schema.table`.
    filter: Option<String>,
    key: Vec<String>,
    system: Option<String>,
    tombstones: Tombstones,
}

struct TopicRoutes {
    format: Format,
    opts: DecodeOptions,
    routes: Vec<Arc<Route>>,
}

/// A Kafka message as the router sees it, independent of the client library.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The Kafka headers, in order; a `None` value is a null header.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

#[derive(Debug)]
pub enum Routed {
    Event(Box<ChangeEvent>, Arc<Route>),
    /// Nothing to run (a tombstone the pipeline skips); the offset still counts.
    Skip {
        pipeline: Option<String>,
        reason: &'static str,
    },
}

/// Why a message cannot be run; the caller adds topic/partition/offset.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("undecodable message: {0}")]
    Undecodable(String),
    #[error("no pipeline for this message: {0}")]
    Unroutable(String),
}

pub struct Router {
    topics: HashMap<String, TopicRoutes>,
    /// `schema_registry:`, for messages in its wire format.
    registry: Option<crate::registry::Registry>,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let mut topics: HashMap<String, TopicRoutes> = HashMap::new();
        for (name, p) in &config.pipelines {
            let route = Arc::new(Route {
                pipeline: name.clone(),
                steps: p.chain.clone(),
                retries: p.retries,
                filter: p.table.as_ref().map(|t| t.to_lowercase()),
                key: p.key.clone(),
                system: p.system.clone(),
                tombstones: p.tombstones,
            });
            for topic in p.all_topics() {
                let entry = topics
                    .entry(topic.to_string())
                    .or_insert_with(|| TopicRoutes {
                        format: p.format,
                        opts: DecodeOptions {
                            key_fields: p.key.clone(),
                            ogg: decode::ogg::Settings::of(p.ogg.as_ref()),
                            placeholders: decode::Placeholders::new(
                                p.unavailable_placeholder.as_deref(),
                            ),
                        },
                        routes: Vec::new(),
                    });
                entry.routes.push(route.clone());
            }
        }
        Router {
            topics,
            registry: config
                .schema_registry
                .as_ref()
                .map(crate::registry::Registry::new),
        }
    }

    /// True when messages may name schemas to fetch first.
    pub fn has_registry(&self) -> bool {
        self.registry.is_some()
    }

    /// Fetches the schemas `msg` names that are not known yet (call before
    /// [`Router::route`]); a transient error when the registry does not
    /// answer. Without `schema_registry:` there is nothing to fetch.
    pub async fn fetch_schemas(
        &self,
        msg: &Message<'_>,
    ) -> Result<(), crate::registry::Unavailable> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        for bytes in [msg.key, msg.value].into_iter().flatten() {
            if let Some(id) = crate::registry::wire_id(bytes) {
                registry.resolve(id).await?;
            }
        }
        Ok(())
    }

    /// Decodes a message: JSON text as it is; Confluent-framed bytes (Avro,
    /// JSON Schema) through the registry's schemas into JSON values first.
    fn decode(
        &self,
        topic: &TopicRoutes,
        msg: &Message<'_>,
        headers: &Map<String, Value>,
    ) -> Result<Decoded, RouteError> {
        let framed = |b: Option<&[u8]>| b.and_then(crate::registry::wire_id);
        if framed(msg.key).is_none() && framed(msg.value).is_none() {
            return decode::decode_with_headers(
                topic.format,
                msg.key,
                msg.value,
                headers,
                &topic.opts,
            )
            .map_err(|e| RouteError::Undecodable(e.0));
        }
        let unavailable = topic.opts.placeholders.texts();
        let json = |bytes: &[u8], what: &str| -> Result<Value, RouteError> {
            match (crate::registry::wire_id(bytes), &self.registry) {
                (None, _) => {
                    decode::parse_json(bytes, what).map_err(|e| RouteError::Undecodable(e.0))
                }
                (Some(id), Some(registry)) => registry
                    .json_of(id, bytes, what, &unavailable)
                    .map_err(RouteError::Undecodable),
                (Some(id), None) => Err(RouteError::Undecodable(format!(
                    "{what} is in a schema registry's wire format (schema id {id}); \
                     set `schema_registry:` in the config to decode it"
                ))),
            }
        };
        let value = msg
            .value
            .map(|v| json(v, "the message value"))
            .transpose()?;
        // Only the formats that read the key decode it.
        let reads_key = match topic.format {
            Format::Debezium | Format::DebeziumFlat => true,
            Format::Ogg => false,
            Format::Json => value.is_none(),
        };
        let key = match msg.key {
            Some(k) if reads_key => Some(json(k, "the message key")?),
            _ => None,
        };
        decode::decode_values_with_headers(topic.format, key, value, headers, &topic.opts)
            .map_err(|e| RouteError::Undecodable(e.0))
    }

    /// The pipeline of a topic that only one pipeline reads (to name it on a
    /// message that could not be decoded).
    pub fn sole_pipeline(&self, topic: &str) -> Option<&str> {
        match self.topics.get(topic)?.routes.as_slice() {
            [only] => Some(&only.pipeline),
            _ => None,
        }
    }

    pub fn route(&self, msg: &Message<'_>) -> Result<Routed, RouteError> {
        let Some(topic) = self.topics.get(msg.topic) else {
            return Err(RouteError::Unroutable(format!(
                "topic `{}` is not in any pipeline",
                msg.topic
            )));
        };
        let headers = decode::headers_json(msg.headers);
        let decoded = self.decode(topic, msg, &headers)?;
        let coords = KafkaCoords {
            topic: msg.topic.to_string(),
            partition: msg.partition,
            offset: msg.offset,
            timestamp: msg.timestamp,
        };
        let change = match decoded {
            Decoded::Change(c) => c,
            Decoded::Tombstone { key } => {
                return tombstone(&topic.routes, key, coords, headers, "tombstone");
            }
            Decoded::NullValue { key } => {
                return tombstone(&topic.routes, key, coords, headers, NULL_VALUE);
            }
        };
        let route = pick(
            &topic.routes,
            change.source.schema.as_deref(),
            change.source.table.as_deref(),
        )
        .ok_or_else(|| {
            RouteError::Unroutable(format!(
                "no pipeline on topic `{}` takes table `{}`",
                msg.topic,
                qualified(
                    change.source.schema.as_deref(),
                    change.source.table.as_deref()
                )
            ))
        })?;
        let key = resolve_key(&change, route)?;
        let mut source = change.source;
        if let Some(system) = &route.system {
            source.system = system.clone();
        } else if source.system.is_empty() {
            source.system = route.pipeline.clone();
        }
        let event = ChangeEvent {
            op: change.op,
            key,
            before: change.before,
            after: change.after,
            source,
            kafka: coords,
            pipeline: route.pipeline.clone(),
            unchanged: change.unchanged,
            headers,
        };
        Ok(Routed::Event(Box::new(event), route.clone()))
    }
}

/// A tombstone names no table: only a topic's single pipeline can take it.
fn tombstone(
    routes: &[Arc<Route>],
    key: Map<String, Value>,
    kafka: KafkaCoords,
    headers: Map<String, Value>,
    reason: &'static str,
) -> Result<Routed, RouteError> {
    let delivered = matches!(routes, [r] if r.tombstones == Tombstones::Deliver);
    if delivered && key.is_empty() {
        return Err(RouteError::Undecodable(EMPTY_KEY.into()));
    }
    Ok(match routes {
        [route] if route.tombstones == Tombstones::Deliver => {
            let source = crate::event::Source {
                system: route
                    .system
                    .clone()
                    .unwrap_or_else(|| route.pipeline.clone()),
                schema: None,
                table: None,
                ts_ms: None,
                position: None,
                extra: Default::default(),
            };
            let pipeline = route.pipeline.clone();
            let ev = ChangeEvent {
                op: Op::Delete,
                key,
                before: None,
                after: None,
                source,
                kafka,
                pipeline,
                unchanged: Vec::new(),
                headers,
            };
            Routed::Event(Box::new(ev), route.clone())
        }
        [route] => Routed::Skip {
            pipeline: Some(route.pipeline.clone()),
            reason,
        },
        _ => Routed::Skip {
            pipeline: None,
            reason,
        },
    })
}

/// The reason of a skipped JSON `null` value (not a Kafka tombstone).
pub const NULL_VALUE: &str = "a JSON null value";

/// A key without columns would make every row of the table one key.
const EMPTY_KEY: &str =
    "the message key is an empty object; a change needs at least one key column";

/// The event's key: the message's own, or taken from the row with the
/// pipeline's `key:` columns; a truncate has none.
fn resolve_key(change: &decode::Change, route: &Route) -> Result<Map<String, Value>, RouteError> {
    match &change.key {
        Some(key) if key.is_empty() && change.op != Op::Truncate => {
            Err(RouteError::Undecodable(EMPTY_KEY.into()))
        }
        Some(key) => Ok(key.clone()),
        None if change.op == Op::Truncate => Ok(Map::new()),
        None if !route.key.is_empty() => {
            let row = change
                .after
                .as_ref()
                .or(change.before.as_ref())
                .ok_or_else(|| {
                    RouteError::Undecodable("no key and no row to take it from".into())
                })?;
            decode::key_from_row(row, &route.key).map_err(|e| RouteError::Undecodable(e.0))
        }
        None => Err(RouteError::Undecodable(format!(
            "the message carries no key; set `key:` on pipeline `{}`",
            route.pipeline
        ))),
    }
}

fn pick<'r>(
    routes: &'r [Arc<Route>],
    schema: Option<&str>,
    table: Option<&str>,
) -> Option<&'r Arc<Route>> {
    let table = table.map(str::to_lowercase);
    let full = qualified(schema, table.as_deref()).to_lowercase();
    let filtered = routes.iter().find(|r| match &r.filter {
        // GoldenGate may name CATALOG.SCHEMA.TABLE; a schema.table filter
        // matches its last two parts.
        Some(f) if f.contains('.') => *f == full || full.ends_with(&format!(".{f}")),
        Some(f) => Some(f.as_str()) == table.as_deref(),
        None => false,
    });
    filtered.or_else(|| routes.iter().find(|r| r.filter.is_none()))
}

fn qualified(schema: Option<&str>, table: Option<&str>) -> String {
    match (schema, table) {
        (Some(s), Some(t)) => format!("{s}.{t}"),
        (None, Some(t)) => t.to_string(),
        _ => "(none)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(pipelines: &str) -> Router {
        let text = format!("kafka:\n  brokers: k\npipelines:\n{pipelines}");
        Router::new(&Config::from_text(&text, Path::new("t.yaml"), |_| None).unwrap())
    }

    fn msg<'a>(topic: &'a str, key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Message<'a> {
        Message {
            topic,
            partition: 1,
            offset: 7,
            timestamp: Some(5),
            key,
            value,
            headers: &[],
        }
    }

    #[test]
    fn an_empty_key_is_refused_not_one_key_for_every_row() {
        let r = router(
            "  a:\n    topic: t\n    chain: [a.b]\n  b:\n    topic: u\n    tombstones: deliver\n    chain: [a.b]\n",
        );
        let update = br#"{"op":"u","after":{"id":1},"source":{"table":"x"}}"#;
        for (topic, value) in [("t", Some(&update[..])), ("u", None)] {
            match r.route(&msg(topic, Some(b"{}"), value)) {
                Err(e) => assert_eq!(
                    e.to_string(),
                    "undecodable message: the message key is an empty object; a change needs at least one key column"
                ),
                Ok(other) => panic!("{topic}: {other:?}"),
            }
        }
    }

    #[test]
    fn tombstones_are_skipped_or_delivered_as_deletes() {
        let r = router(
            "  a:\n    topic: t\n    chain: [a.b]\n  b:\n    topic: u\n    tombstones: deliver\n    chain: [a.b]\n",
        );
        match r.route(&msg("t", Some(br#"{"id":1}"#), None)).unwrap() {
            Routed::Skip { pipeline, reason } => {
                assert_eq!((pipeline.as_deref(), reason), (Some("a"), "tombstone"))
            }
            other => panic!("{other:?}"),
        }
        match r.route(&msg("u", Some(br#"{"id":1}"#), None)).unwrap() {
            Routed::Event(ev, route) => {
                assert_eq!((ev.op, route.pipeline.as_str()), (Op::Delete, "b"));
                assert_eq!(ev.key["id"], 1);
                assert_eq!((ev.kafka.partition, ev.kafka.offset), (1, 7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn table_filters_pick_the_pipeline_and_fill_the_key() {
        let r = router(
            "  any:\n    topic: ogg\n    format: ogg\n    key: [ID]\n    chain: [a.b]\n\
             \x20 orders:\n    topic: ogg\n    format: ogg\n    table: shop.orders\n    key: [ORDER_ID]\n    system: erp\n    chain: [s.orders]\n",
        );
        let orders = br#"{"table":"SHOP.ORDERS","op_type":"I","after":{"ORDER_ID":5,"ID":9}}"#;
        let Routed::Event(ev, route) = r.route(&msg("ogg", None, Some(orders))).unwrap() else {
            panic!()
        };
        assert_eq!(
            (route.pipeline.as_str(), ev.source.system.as_str()),
            ("orders", "erp")
        );
        assert_eq!(
            serde_json::Value::Object(ev.key.clone()),
            serde_json::json!({"ORDER_ID": 5})
        );
        let other = br#"{"table":"SHOP.ITEMS","op_type":"I","after":{"ID":9}}"#;
        let Routed::Event(ev, route) = r.route(&msg("ogg", None, Some(other))).unwrap() else {
            panic!()
        };
        assert_eq!(
            (route.pipeline.as_str(), ev.source.system.as_str()),
            ("any", "any")
        );
        assert_eq!(ev.key["ID"], 9);
    }

    #[test]
    fn registry_framed_bytes_without_a_registry_say_what_to_set() {
        let r = router("  a:\n    topic: t\n    chain: [a.b]\n");
        let framed = [0u8, 0, 0, 0, 42, 2, 4, 6];
        assert_eq!(
            r.route(&msg("t", Some(&framed), Some(&framed)))
                .unwrap_err(),
            RouteError::Undecodable(
                "the message value is in a schema registry's wire format (schema id 42); \
                 set `schema_registry:` in the config to decode it"
                    .into()
            )
        );
    }

    #[test]
    fn unroutable_and_keyless_messages_are_errors() {
        let r = router("  a:\n    topic: t\n    format: ogg\n    table: x.y\n    chain: [a.b]\n");
        let other = br#"{"table":"X.Z","op_type":"I","after":{"ID":1}}"#;
        assert_eq!(
            r.route(&msg("t", None, Some(other))).unwrap_err(),
            RouteError::Unroutable("no pipeline on topic `t` takes table `X.Z`".into())
        );
        let keyless = br#"{"table":"X.Y","op_type":"I","after":{"ID":1}}"#;
        assert_eq!(
            r.route(&msg("t", None, Some(keyless))).unwrap_err(),
            RouteError::Undecodable(
                "the message carries no key; set `key:` on pipeline `a`".into()
            )
        );
    }
}
