//! Oracle GoldenGate for Big Data, JSON formatter, op-modelled records.

use super::{Change, DecodeError, Decoded, err, key_from_row, object_or_null, scalar_text};
use crate::config::{OggOptions, OpTypes, Zone};
use crate::event::{Op, Source};
use serde_json::{Map, Value};

/// A topic's GoldenGate handler settings, ready to decode with.
#[derive(Debug, Clone)]
pub struct Settings {
    codes: OpTypes,
    zone: Zone,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::of(None)
    }
}

impl Settings {
    /// From a pipeline's `ogg:` (validated: the zone parses).
    pub fn of(options: Option<&OggOptions>) -> Settings {
        let options = options.cloned().unwrap_or_default();
        Settings {
            zone: Zone::parse(&options.op_ts_zone)
                .unwrap_or(Zone::Fixed(chrono::FixedOffset::east_opt(0).expect("zero"))),
            codes: options.op_types,
        }
    }

    fn op(&self, code: &str) -> Option<Op> {
        let c = &self.codes;
        if code == c.insert {
            Some(Op::Create)
        } else if code == c.update || code == "PK" {
            // PK is GoldenGate's primary-key update: an update whose key changed.
            Some(Op::Update)
        } else if code == c.delete {
            Some(Op::Delete)
        } else if code == c.truncate {
            Some(Op::Truncate)
        } else {
            None
        }
    }
}

pub(super) fn decode(value: Option<Value>, settings: &Settings) -> Result<Decoded, DecodeError> {
    let Some(value) = value else {
        return err("the GoldenGate message has no value");
    };
    let Value::Object(rec) = value else {
        return err("the GoldenGate record must be a JSON object");
    };
    let op = match rec.get("op_type").and_then(Value::as_str) {
        Some(code) => match settings.op(code) {
            Some(op) => op,
            None => {
                let c = &settings.codes;
                return err(format!(
                    "unknown GoldenGate op_type `{code}` (this pipeline reads {} insert, {} update, {} delete, {} truncate: `ogg.op_types`)",
                    c.insert, c.update, c.delete, c.truncate
                ));
            }
        },
        None => return err("the GoldenGate record has no `op_type`"),
    };
    let Some(table) = rec.get("table").and_then(Value::as_str) else {
        return err("the GoldenGate record has no `table`");
    };
    let (schema, table) = match table.rsplit_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, table.to_string()),
    };
    let (before, missing_before) = image(rec.get("before"), "before")?;
    let (mut after, missing_after) = image(rec.get("after"), "after")?;
    // GoldenGate may write only the key and the changed columns into an
    // update's `after` (or flag the others `_isMissing`): such a column is
    // unchanged, not null. Its value is the `before` one when GoldenGate
    // wrote that; otherwise the stored value stands (`unchanged`).
    let mut unchanged = Vec::new();
    if let Some(a) = &mut after {
        if let Some(b) = &before {
            for (col, v) in b {
                if !missing_before.contains(col) && !a.contains_key(col) {
                    a.insert(col.clone(), v.clone());
                }
            }
        }
        for col in missing_after {
            if !a.contains_key(&col) {
                unchanged.push(col);
            }
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
        .and_then(|t| parse_op_ts(t, &settings.zone));
    let mut extra = Map::new();
    for field in ["current_ts", "tokens"] {
        if let Some(v) = rec.get(field).filter(|v| !v.is_null()) {
            extra.insert(field.to_string(), v.clone());
        }
    }
    let source = Source {
        system: String::new(),
        schema,
        table: Some(table),
        ts_ms,
        position: scalar_text(rec.get("pos")),
        extra,
    };
    Ok(Decoded::Change(Change {
        op,
        key,
        before,
        after,
        source,
        unchanged,
    }))
}

/// A row image and the columns GoldenGate flagged missing in it.
type Image = (Option<Map<String, Value>>, Vec<String>);

/// A `before` or `after` image without GoldenGate's `COL_isMissing` flags
/// (`includeMissingFields=true`), and the columns flagged missing.
fn image(v: Option<&Value>, field: &str) -> Result<Image, DecodeError> {
    let Some(mut row) = object_or_null(v, field)? else {
        return Ok((None, Vec::new()));
    };
    let flags: Vec<(String, bool)> = row
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix("_isMissing")?.to_string(), v.as_bool()?)))
        .collect();
    let mut missing = Vec::new();
    for (col, is_missing) in flags {
        row.remove(&format!("{col}_isMissing"));
        if is_missing {
            // A missing column may still be written as null: it is no value.
            row.remove(&col);
            missing.push(col);
        }
    }
    Ok((Some(row), missing))
}

/// `op_ts` is the commit time, in UTC unless the handler writes local time
/// (`ogg.op_ts_zone`): `2015-11-05 18:45:36.000000`, or ISO-8601 with a `T`.
fn parse_op_ts(s: &str, zone: &Zone) -> Option<i64> {
    let s = s.trim().replacen('T', " ", 1);
    let local = chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    zone.epoch_millis(local)
}

#[cfg(test)]
mod tests {
    use crate::config::Zone;

    #[test]
    fn op_ts_is_utc_milliseconds_unless_a_zone_is_given() {
        let utc = Zone::parse("UTC").unwrap();
        assert_eq!(
            super::parse_op_ts("2015-11-05 18:45:36.000000", &utc),
            Some(1_446_749_136_000)
        );
        assert_eq!(
            super::parse_op_ts("2015-11-05T18:45:36.123", &utc),
            Some(1_446_749_136_123)
        );
        assert_eq!(super::parse_op_ts("yesterday", &utc), None);
        // Berlin is UTC+1 in November, UTC+2 in July.
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            super::parse_op_ts("2015-11-05 19:45:36.000000", &berlin),
            Some(1_446_749_136_000)
        );
        assert_eq!(
            super::parse_op_ts("2015-07-05 20:45:36", &berlin),
            super::parse_op_ts("2015-07-05 18:45:36", &utc)
        );
        let plus2 = Zone::parse("+02:00").unwrap();
        assert_eq!(
            super::parse_op_ts("2015-11-05 20:45:36", &plus2),
            Some(1_446_749_136_000)
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
    }
}
