//! `ChangeEvent`: one row change, the same shape whatever CDC tool produced it.
//!
//! This is the JSON every step procedure receives as its `inout ev jsonb`
//! (see the step contract in the README).

use serde::Serialize;
use serde_json::{Map, Value};

/// The kind of change, in Debezium's one-letter vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    /// A snapshot read, or a whole-row state without a known kind of change.
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "t")]
    Truncate,
}

impl Op {
    /// The op of Debezium's one-letter code.
    pub fn of_letter(letter: &str) -> Option<Op> {
        Some(match letter {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Where the change happened in the source system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub system: String,
    pub schema: Option<String>,
    pub table: Option<String>,
    /// Change time at the source, milliseconds since the epoch.
    pub ts_ms: Option<i64>,
    /// The source's own log position (LSN, SCN, trail position), as text so it
    /// compares the same way whatever the tool.
    pub position: Option<String>,
    /// What else the tool says of the change, each under its own key:
    /// Debezium's `transaction` block, GoldenGate's `tokens` and `current_ts`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where the change came from in Kafka.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KafkaCoords {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeEvent {
    pub op: Op,
    /// Primary-key columns of the row; empty only for truncate.
    pub key: Map<String, Value>,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub source: Source,
    pub kafka: KafkaCoords,
    pub pipeline: String,
    /// Columns of `after` the source did not send a value for (an unchanged
    /// TOASTed column, a GoldenGate column marked missing): the stored value
    /// stands. Left out of the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// The Kafka message's headers: text where UTF-8, `{"base64": "…"}`
    /// where not. Left out of the JSON when there are none.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
}
