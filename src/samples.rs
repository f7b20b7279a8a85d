//! Deterministic sample change events, as the source systems of the two
//! examples would send them: the demo, the benchmarks and the tests use them.
//! Behind the `tools` feature (on by default); a service build can leave it out.

pub mod avro;

use crate::kafka::Record;
use serde_json::{Value, json};

/// A small deterministic generator (no randomness crate needed for a demo
/// or a benchmark).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const SURNAMES: &[&str] = &["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon"];
const GIVEN: &[&str] = &[
    "Minjun", "Seoyeon", "Jiwoo", "Hayoon", "Dohyun", "Jiho", "Sua", "Yejun",
];

/// Change events of three systems: sales (Debezium, plain JSON), options
/// (Debezium with the schema/payload envelope) and the CRM (GoldenGate).
/// Each person is inserted, a third of them in a second system as well;
/// about a third get updated twice, a tenth deleted.
pub fn sample_events(people: usize) -> Vec<Record> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let mut ts: i64 = 1_767_225_600_000;
    let mut last_phone = String::new();
    for id in 1..=people as i64 {
        let name = format!(
            "{} {}",
            SURNAMES[rng.next(8) as usize],
            GIVEN[rng.next(8) as usize]
        );
        let phone = format!("010-{:04}-{:04}", rng.next(10_000), rng.next(10_000));
        let email = format!(
            " {}.{id}@Example.COM ",
            name.replace(' ', ".").to_lowercase()
        );
        let system = id % 3;
        // Every 25th person shares the phone of the one before (a family);
        // every 50th gives the shop's switchboard, which identifies no one.
        let phone = match id {
            _ if id % 50 == 0 => "1588-1234".to_string(),
            _ if id % 25 == 1 && id > 1 => last_phone.clone(),
            _ => phone,
        };
        last_phone = phone.clone();
        let mut row = json!({"name": name, "phone": phone, "email": email});
        ts += 1000;
        out.push(event(system, id, "c", None, Some(&row), ts));
        // A third of the people are in a second system too, with the same
        // e-mail written differently and the phone in another format.
        if rng.next(3) == 0 {
            let other = (system + 1 + rng.next(2) as i64) % 3;
            let again = json!({"name": name, "phone": phone.replacen("010-", "+82 10-", 1),
                               "email": email.trim().to_uppercase()});
            ts += 1000;
            out.push(event(other, id, "c", None, Some(&again), ts));
        }
        if rng.next(3) == 0 {
            for _ in 0..2 {
                let before = row.clone();
                row["phone"] = json!(format!(
                    "+82 10-{:04}-{:04}",
                    rng.next(10_000),
                    rng.next(10_000)
                ));
                ts += 1000;
                out.push(event(system, id, "u", Some(&before), Some(&row), ts));
            }
        }
        if rng.next(10) == 0 {
            ts += 1000;
            out.push(event(system, id, "d", Some(&row), None, ts));
            if system != 2 {
                out.push(Record {
                    topic: topic(system).into(),
                    key: Some(debezium_key(system, id)),
                    value: None,
                    headers: Vec::new(),
                });
            }
        }
    }
    out
}

fn topic(system: i64) -> &'static str {
    match system {
        0 => "sales.public.customer",
        1 => "options.public.member",
        _ => "crm.contact",
    }
}

fn debezium_key(system: i64, id: i64) -> Vec<u8> {
    let key = if system == 0 {
        json!({"id": id})
    } else {
        json!({"schema": {"type": "struct", "fields": [{"field": "member_no", "type": "string"}]},
               "payload": {"member_no": format!("M{id:06}")}})
    };
    key.to_string().into_bytes()
}

/// One change event of the customer example as its CDC tool writes it:
/// system 0 is sales (Debezium), 1 options (Debezium with the schema
/// envelope), 2 the CRM (GoldenGate). `row` has name, phone and email.
pub fn event(
    system: i64,
    id: i64,
    op: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    ts: i64,
) -> Record {
    let value = match system {
        0 => {
            let row = |r: &Value| json!({"id": id, "name": r["name"], "phone": r["phone"], "email": r["email"]});
            json!({"before": before.map(row), "after": after.map(row), "op": op, "ts_ms": ts + 5,
                   "source": {"connector": "postgresql", "name": "sales", "db": "sales", "schema": "public",
                              "table": "customer", "ts_ms": ts, "lsn": ts * 8}})
        }
        1 => {
            let row = |r: &Value| {
                json!({"member_no": format!("M{id:06}"), "full_name": r["name"],
                                          "mobile": r["phone"], "email_addr": r["email"]})
            };
            json!({"schema": {"type": "struct", "name": "options.public.member.Envelope"},
                   "payload": {"before": before.map(row), "after": after.map(row), "op": op, "ts_ms": ts + 5,
                               "source": {"connector": "postgresql", "name": "options", "db": "options",
                                          "schema": "public", "table": "member", "ts_ms": ts, "lsn": ts * 8}}})
        }
        _ => {
            let row = |r: &Value| {
                let name = r["name"].as_str().unwrap_or("");
                let (last, first) = name.split_once(' ').unwrap_or((name, ""));
                json!({"CONTACT_ID": id, "FIRST_NAME": first, "LAST_NAME": last,
                       "PHONE": r["phone"], "EMAIL": r["email"]})
            };
            let op_type = match op {
                "c" => "I",
                "u" => "U",
                _ => "D",
            };
            let secs = ts / 1000;
            let op_ts = chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                .unwrap_or_default();
            let mut v = json!({"table": "CRM.CONTACT", "op_type": op_type, "op_ts": op_ts,
                               "pos": format!("{:020}", ts), "primary_keys": ["CONTACT_ID"]});
            if let Some(b) = before {
                v["before"] = row(b);
            }
            if let Some(a) = after {
                v["after"] = row(a);
            }
            v
        }
    };
    let key = if system == 2 {
        Some(id.to_string().into_bytes())
    } else {
        Some(debezium_key(system, id))
    };
    Record {
        topic: topic(system).into(),
        key,
        value: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
    }
}

/// Campaign events: every member, its marketing consent and its terms
/// agreement on three topics; for every third member the side rows are
/// produced first, so they must wait for their member. Some consents change.
pub fn campaign_events(people: usize) -> Vec<Record> {
    let mut rng = Lcg(7);
    let mut early = Vec::new();
    let mut out = Vec::new();
    for id in 1..=people as i64 {
        let ts = 1_767_225_600_000 + id * 1000;
        let key = json!({"member_id": id}).to_string().into_bytes();
        let msg = |topic: &str, after: Value, ts: i64| {
            Record {
            topic: topic.to_string(),
            key: Some(key.clone()),
            value: Some(
                json!({"op": "c", "before": null, "after": after,
                       "source": {"name": "shop", "schema": "public", "table": topic.rsplit('.').next(), "ts_ms": ts}})
                .to_string()
                .into_bytes(),
            ),
            headers: Vec::new(),
        }
        };
        let grade = ["bronze", "silver", "gold"][rng.next(3) as usize];
        let member = msg(
            "shop.public.member",
            json!({"member_id": id, "name": format!("member {id}"), "grade": grade, "phone": format!("010-{:04}-{:04}", rng.next(10_000), id)}),
            ts,
        );
        let consent = msg(
            "shop.public.marketing_consent",
            json!({"member_id": id, "sms_ok": rng.next(2) == 0, "email_ok": true, "push_ok": rng.next(3) == 0}),
            ts + 10,
        );
        let terms = msg(
            "shop.public.terms_agreement",
            json!({"member_id": id, "terms_version": "2026-01", "marketing_terms": true}),
            ts + 20,
        );
        if id % 3 == 0 {
            early.push(consent);
            early.push(terms);
            out.push(member);
        } else {
            out.extend([member, consent, terms]);
        }
        if rng.next(5) == 0 {
            out.push(msg(
                "shop.public.marketing_consent",
                json!({"member_id": id, "sms_ok": false, "email_ok": false, "push_ok": false}),
                ts + 30,
            ));
        }
    }
    early.extend(out);
    early
}
