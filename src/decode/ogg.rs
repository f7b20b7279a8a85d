//! Oracle GoldenGate for Big Data, JSON formatter, op-modelled records.

use super::{Change, DecodeError, Decoded, err, key_from_row, object_or_null, scalar_text};
use crate::event::{Op, Source};
use serde_json::Value;

pub(super) fn decode(value: Option<Value>) -> Result<Decoded, DecodeError> {
    let Some(value) = value else {
        return err("the GoldenGate message has no value");
    };
    let Value::Object(rec) = value else {
        return err("the GoldenGate record must be a JSON object");
    };
    let op = match rec.get("op_type").and_then(Value::as_str) {
        Some("I") => Op::Create,
        // PK is GoldenGate's primary-key update: an update whose key changed.
        Some("U") | Some("PK") => Op::Update,
        Some("D") => Op::Delete,
        Some("T") => Op::Truncate,
        Some(other) => return err(format!("unknown GoldenGate op_type `{other}`")),
        None => return err("the GoldenGate record has no `op_type`"),
    };
    let Some(table) = rec.get("table").and_then(Value::as_str) else {
        return err("the GoldenGate record has no `table`");
    };
    let (schema, table) = match table.rsplit_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, table.to_string()),
    };
    let before = object_or_null(rec.get("before"), "before")?;
    let mut after = object_or_null(rec.get("after"), "after")?;
    // GoldenGate may write only the key and the changed columns into an
    // update's `after`; a column it leaves out is unchanged, not null.
    if let (Some(b), Some(a)) = (&before, &mut after) {
        for (col, v) in b {
            a.entry(col.clone()).or_insert_with(|| v.clone());
        }
    }
    if op != Op::Truncate && after.is_none() && before.is_none() {
        return err("the GoldenGate record has neither `before` nor `after`");
    }
    let key = match rec.get("primary_keys").and_then(Value::as_array) {
        Some(pks) if op != Op::Truncate && !pks.is_empty() => {
            let fields: Vec<String> = pks
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            // For a delete only `before` exists; for an update the new key wins.
            let row = after.as_ref().or(before.as_ref()).expect("checked above");
            Some(key_from_row(row, &fields)?)
        }
        _ => None,
    };
    let ts_ms = rec
        .get("op_ts")
        .and_then(Value::as_str)
        .and_then(parse_op_ts);
    let source = Source {
        system: String::new(),
        schema,
        table: Some(table),
        ts_ms,
        position: scalar_text(rec.get("pos")),
        extra: Default::default(),
    };
    Ok(Decoded::Change(Change {
        op,
        key,
        before,
        after,
        source,
        unchanged: Vec::new(),
    }))
}

/// `op_ts` is the commit time in UTC: `2015-11-05 18:45:36.000000`
/// (some formatter settings write ISO-8601 with a `T`).
fn parse_op_ts(s: &str) -> Option<i64> {
    let s = s.trim().replacen('T', " ", 1);
    chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn op_ts_is_utc_milliseconds() {
        assert_eq!(
            super::parse_op_ts("2015-11-05 18:45:36.000000"),
            Some(1_446_749_136_000)
        );
        assert_eq!(
            super::parse_op_ts("2015-11-05T18:45:36.123"),
            Some(1_446_749_136_123)
        );
        assert_eq!(super::parse_op_ts("yesterday"), None);
    }
}
