//! `pgchain bench --quality N`: how well the people example's identity rules
//! find the same person, on N generated people whose truth is known.
//!
//! Every person has a master record (given name, surname, birth date,
//! street, postcode, phone, e-mail, national id) and appears in one to three
//! registers (a population register, a clinic, an insurer), sometimes twice
//! in one. Each copy is corrupted independently, as registers are: typos,
//! given and family name swapped, nicknames, missing fields, transposed
//! date digits and day/month swaps, a household's shared landline, a
//! company switchboard many people give. The copies go through the
//! example's own l1_cleanse procedures; `people.rebuild()` builds the
//! clusters; pairwise precision, recall and F1 against the truth follow.

use pgchain::samples::Lcg;
use serde_json::{Value, json};
use std::time::Instant;

const GIVEN: &[(&str, &[&str])] = &[
    ("robert", &["bob", "rob"]),
    ("william", &["bill", "will"]),
    ("elizabeth", &["liz", "beth"]),
    ("katherine", &["kate", "kathy"]),
    ("michael", &["mike"]),
    ("james", &["jim", "jimmy"]),
    ("margaret", &["maggie", "peggy"]),
    ("thomas", &["tom"]),
    ("richard", &["rick", "dick"]),
    ("joseph", &["joe"]),
    ("jennifer", &["jen", "jenny"]),
    ("christopher", &["chris"]),
    ("daniel", &["dan", "danny"]),
    ("matthew", &["matt"]),
    ("anthony", &["tony"]),
    ("patricia", &["pat", "trish"]),
    ("susan", &["sue"]),
    ("andrew", &["andy"]),
    ("samuel", &["sam"]),
    ("alexander", &["alex"]),
    ("victoria", &["vicky"]),
    ("rebecca", &["becky"]),
    ("nicholas", &["nick"]),
    ("benjamin", &["ben"]),
    ("olivia", &[]),
    ("charlotte", &["lottie"]),
    ("amelia", &["millie"]),
    ("isla", &[]),
    ("mia", &[]),
    ("ava", &[]),
    ("grace", &[]),
    ("chloe", &[]),
    ("sophie", &[]),
    ("emily", &[]),
    ("lachlan", &[]),
    ("jack", &[]),
    ("oliver", &["ollie"]),
    ("noah", &[]),
    ("lucas", &[]),
    ("ethan", &[]),
    ("harrison", &["harry"]),
    ("zoe", &[]),
    ("ruby", &[]),
    ("hannah", &[]),
    ("lily", &[]),
    ("jessica", &["jess"]),
    ("ella", &[]),
    ("liam", &[]),
    ("cooper", &[]),
    ("riley", &[]),
];

const SURNAME_START: &[&str] = &[
    "smi", "jo", "wil", "bro", "tay", "an", "tho", "whi", "mar", "har", "ro", "cla", "le", "wal",
    "ha", "yo", "kin", "wri", "lo", "hil", "sco", "gre", "ada", "ba", "go", "nel", "car", "mit",
    "pe", "fer",
];
const SURNAME_END: &[&str] = &[
    "th", "nes", "son", "wn", "lor", "ders", "mas", "te", "tin", "ris", "berts", "ley", "inson",
    "rke", "wis", "ker", "ll", "ng", "ght", "pez", "ller", "tt", "ens", "ms", "ber", "rdon",
    "lson", "ter", "chell", "guson",
];

/// A person's true values.
struct Person {
    given: usize,
    surname: String,
    birth: (i32, u32, u32),
    street: String,
    postcode: String,
    phone: String,
    email: String,
    national_id: String,
}

fn chance(rng: &mut Lcg, per_mille: u64) -> bool {
    rng.next(1000) < per_mille
}

/// One typo: a letter substituted, dropped, doubled or two swapped.
fn typo(rng: &mut Lcg, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 2 {
        return s.to_string();
    }
    let i = rng.next(c.len() as u64 - 1) as usize;
    match rng.next(4) {
        0 => c[i] = (b'a' + rng.next(26) as u8) as char,
        1 => {
            c.remove(i);
        }
        2 => c.insert(i, c[i]),
        _ => c.swap(i, i + 1),
    }
    c.into_iter().collect()
}

fn people(n: usize, rng: &mut Lcg) -> Vec<Person> {
    let mut out: Vec<Person> = Vec::with_capacity(n);
    for p in 0..n {
        // Households of one to four share a surname, street and landline.
        let household = if p > 0 && chance(rng, 250) {
            Some(&out[p - 1])
        } else {
            None
        };
        let surname = household.map_or_else(
            || {
                format!(
                    "{}{}",
                    SURNAME_START[rng.next(SURNAME_START.len() as u64) as usize],
                    SURNAME_END[rng.next(SURNAME_END.len() as u64) as usize]
                )
            },
            |h| h.surname.clone(),
        );
        let street = household.map_or_else(
            || format!("{} {} street", 1 + rng.next(300), typo(rng, &surname)),
            |h| h.street.clone(),
        );
        let postcode = household.map_or_else(
            || format!("{}", 2000 + rng.next(7000)),
            |h| h.postcode.clone(),
        );
        let phone = match household {
            Some(h) if chance(rng, 500) => h.phone.clone(),
            _ => format!("010-{:04}-{:04}", rng.next(10_000), rng.next(10_000)),
        };
        let given = rng.next(GIVEN.len() as u64) as usize;
        let email = format!("{}.{}{}@example.com", GIVEN[given].0, surname, p);
        out.push(Person {
            given,
            surname,
            birth: (
                1930 + rng.next(75) as i32,
                1 + rng.next(12) as u32,
                1 + rng.next(28) as u32,
            ),
            street,
            postcode,
            phone,
            email,
            national_id: format!("{:09}", 100_000_000 + p as u64 * 7919 % 899_999_999),
        });
    }
    out
}

/// One register's copy of a person, corrupted: (given, surname, birth date
/// as YYYYMMDD, street, postcode, phone, e-mail, national id).
fn copy(rng: &mut Lcg, p: &Person, with_id: u64) -> [Option<String>; 8] {
    let (name, nicks) = GIVEN[p.given];
    let mut given = if !nicks.is_empty() && chance(rng, 60) {
        nicks[rng.next(nicks.len() as u64) as usize].to_string()
    } else {
        name.to_string()
    };
    let mut surname = p.surname.clone();
    if chance(rng, 40) {
        given = typo(rng, &given);
    }
    if chance(rng, 60) {
        surname = typo(rng, &surname);
    }
    if chance(rng, 30) {
        std::mem::swap(&mut given, &mut surname);
    }
    let (y, m, d) = p.birth;
    let mut birth = format!("{y:04}{m:02}{d:02}");
    if chance(rng, 20) && d <= 12 {
        birth = format!("{y:04}{d:02}{m:02}");
    } else if chance(rng, 25) {
        let mut c: Vec<char> = birth.chars().collect();
        let i = 4 + rng.next(3) as usize;
        c.swap(i, i + 1);
        birth = c.into_iter().collect();
    }
    let mut postcode = p.postcode.clone();
    if chance(rng, 20) {
        postcode = typo(rng, &postcode);
    }
    let phone = if chance(rng, 10) {
        // A company switchboard: one of five numbers many people give.
        format!("010-9999-000{}", rng.next(5))
    } else {
        p.phone.clone()
    };
    let keep = |rng: &mut Lcg, v: String, missing: u64| (!chance(rng, missing)).then_some(v);
    [
        keep(rng, given, 30),
        keep(rng, surname, 20),
        keep(rng, birth, 50),
        keep(rng, p.street.clone(), 100),
        keep(rng, postcode, 100),
        keep(rng, phone, 250),
        keep(rng, p.email.clone(), 400),
        keep(rng, p.national_id.clone(), 1000 - with_id),
    ]
}

/// A register of the people example.
struct Register {
    system: &'static str,
    /// Its l1_cleanse procedure.
    procedure: &'static str,
    key_field: &'static str,
    /// Its field names, in the order of `copy`.
    fields: [&'static str; 8],
    /// Share of the people in it, per mille.
    share: u64,
    /// Share of its copies with the national id, per mille.
    with_id: u64,
}

const REGISTERS: [Register; 3] = [
    Register {
        system: "register",
        procedure: "l1.cleanse_register_person",
        key_field: "person_id",
        fields: [
            "given_name",
            "surname",
            "date_of_birth",
            "address",
            "postcode",
            "phone",
            "email",
            "national_id",
        ],
        share: 700,
        with_id: 950,
    },
    Register {
        system: "clinic",
        procedure: "l1.cleanse_clinic_patient",
        key_field: "patient_no",
        fields: [
            "first_name",
            "last_name",
            "dob",
            "street",
            "zip",
            "mobile",
            "email",
            "national_id",
        ],
        share: 600,
        with_id: 0,
    },
    Register {
        system: "insurer",
        procedure: "l1.cleanse_insurer_holder",
        key_field: "HOLDER_ID",
        fields: [
            "GIVEN_NAME",
            "FAMILY_NAME",
            "BIRTH_DATE",
            "ADDRESS",
            "POSTCODE",
            "PHONE",
            "EMAIL",
            "NATIONAL_ID",
        ],
        share: 500,
        with_id: 600,
    },
];

pub async fn run(url: &str, n: usize, seed: u64) -> anyhow::Result<()> {
    let client = pgchain::db::connect(url).await?;
    let mut rng = Lcg(seed);
    let folk = people(n, &mut rng);
    // (procedure, event, truth: system, key, person)
    let mut events: Vec<(&str, Value, (&str, String, i64))> = Vec::new();
    for (p, person) in folk.iter().enumerate() {
        let mut placed = false;
        for (r, reg) in REGISTERS.iter().enumerate() {
            let copies = if chance(&mut rng, reg.share) || (r == 2 && !placed) {
                // A duplicate registration now and then.
                if chance(&mut rng, 30) { 2 } else { 1 }
            } else {
                0
            };
            for c in 0..copies {
                placed = true;
                let key = format!("{p}-{c}");
                let values = copy(&mut rng, person, reg.with_id);
                let mut after = serde_json::Map::new();
                after.insert(reg.key_field.to_string(), json!(key));
                for (f, v) in reg.fields.iter().zip(values) {
                    after.insert(f.to_string(), json!(v));
                }
                let ev = json!({"op": "c", "key": {reg.key_field: key}, "after": after,
                                "source": {"ts_ms": 1_767_225_600_000_i64 + events.len() as i64}});
                events.push((reg.procedure, ev, (reg.system, key, p as i64)));
            }
        }
    }
    println!(
        "pgchain bench --quality {n} (seed {seed}): {n} people, {} records in three registers; {} cores",
        events.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let t = Instant::now();
    client
        .batch_execute("create table if not exists public.quality_truth (system text, source_key text, person bigint, primary key (system, source_key)); truncate public.quality_truth")
        .await?;
    for chunk in events.chunks(5000) {
        client
            .execute(
                "insert into public.quality_truth select * from unnest($1::text[], $2::text[], $3::bigint[])",
                &[
                    &chunk.iter().map(|(_, _, t)| t.0).collect::<Vec<_>>(),
                    &chunk.iter().map(|(_, _, t)| t.1.as_str()).collect::<Vec<_>>(),
                    &chunk.iter().map(|(_, _, t)| t.2).collect::<Vec<_>>(),
                ],
            )
            .await?;
    }
    // Each copy through its register's own cleanse procedure: four
    // connections, the calls of each pipelined in slices.
    let events = std::sync::Arc::new(events);
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (events, url) = (events.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let client = pgchain::db::connect(&url).await?;
            let mine: Vec<_> = events.iter().skip(w).step_by(workers).collect();
            for slice in mine.chunks(200) {
                let calls = slice.iter().map(|(procedure, ev, _)| {
                    let sql = format!("call {procedure}($1)");
                    let client = &client;
                    async move {
                        client
                            .execute(&sql, &[&tokio_postgres::types::Json(ev)])
                            .await
                    }
                });
                futures::future::try_join_all(calls).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "cleansed {} records in {:.1} s",
        events.len(),
        t.elapsed().as_secs_f64()
    );

    // (a) the exact rules alone, in a graph of their own; (b) the example as
    // it ships, exact and scored rules.
    client.batch_execute(&exact_only()?).await?;
    for (schema, what) in [
        ("people_exact", "(a) exact rules of examples/people"),
        ("people", "(b) exact and scored rules of examples/people"),
    ] {
        let t = Instant::now();
        client
            .batch_execute(&format!("call {schema}.rebuild()"))
            .await?;
        let built = t.elapsed().as_secs_f64();
        let (truth, predicted, hit) = pairs(&client, schema).await?;
        let precision = if predicted > 0.0 {
            hit / predicted
        } else {
            1.0
        };
        let recall = if truth > 0.0 { hit / truth } else { 1.0 };
        let f1 = 2.0 * precision * recall / (precision + recall).max(f64::MIN_POSITIVE);
        println!(
            "{what}: rebuild {built:.1} s; true pairs {truth:.0}, linked pairs {predicted:.0}, right {hit:.0}"
        );
        println!("  precision {precision:.4}  recall {recall:.4}  F1 {f1:.4}");
    }
    Ok(())
}

/// Pairwise figures of the graph in `schema` against the truth: true
/// pairs, linked pairs, and linked pairs that are true.
async fn pairs(client: &tokio_postgres::Client, schema: &str) -> anyhow::Result<(f64, f64, f64)> {
    let row = client
        .query_one(
            &format!(
                "with r as (select r.cluster_id, t.person from {schema}.records r
                              join public.quality_truth t using (system, source_key))
                 select (select sum(x.n) from (select count(*)::numeric * (count(*) - 1) / 2 n from r group by person) x)::float8,
                        (select sum(x.n) from (select count(*)::numeric * (count(*) - 1) / 2 n from r group by cluster_id) x)::float8,
                        (select sum(x.n) from (select count(*)::numeric * (count(*) - 1) / 2 n from r group by cluster_id, person) x)::float8"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The example's link procedure without its scored rules, in a schema of
/// its own (people_exact): what the exact rules find alone.
fn exact_only() -> anyhow::Result<String> {
    let path = std::path::Path::new("examples/people/pipelines.yaml");
    let config = pgchain::config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = config
        .procedures
        .get("people.link_person")
        .ok_or_else(|| anyhow::anyhow!("{}: no people.link_person", path.display()))?;
    let mut vars = spec.vars.clone();
    vars.shift_remove("scored");
    vars.insert("schema".into(), "people_exact".into());
    let yaml = format!(
        "kafka:\n  brokers: k\npipelines:\n  p:\n    topic: t\n    chain: [people_exact.link]\nprocedures:\n  people_exact.link:\n    template: identity_link\n    vars: {}\n",
        serde_json::to_string(&vars)?
    );
    let exact =
        pgchain::config::Config::from_text(&yaml, std::path::Path::new("exact.yaml"), |_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let none = std::env::temp_dir().join("pgchain-quality-no-migrations");
    std::fs::create_dir_all(&none)?;
    let rendered = pgchain::render::render_all(
        &exact,
        std::path::Path::new("examples/people/sql/templates"),
        &none,
    )
    .map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    Ok(rendered[0].sql.clone())
}
