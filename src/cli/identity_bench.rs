//! `pgchain bench --identity N`: identity resolution of the customer example
//! at N union records.
//!
//! Generates N member-union records of three systems with realistic overlap
//! (a third of the people in two or more systems, family phones, mobile
//! numbers shared by many people, representative numbers), builds the
//! clusters, golden records and outbox with the set-based bulk path, then
//! runs single change events through the example's whole chain
//! (`pgchain.apply_event`: L0 → L1 → link → unify → publish, one transaction
//! each) and reports events/s and latency, with the peak memory of
//! PostgreSQL and of pgchain.

use crate::measure::Figures;
use pgchain::samples::Lcg;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::types::Json;

/// Syllables of the generated given names: two of them make one (1,600
/// given names), so that a name's soundex, the example's block, varies as
/// real names do.
const SYLLABLES: [&str; 40] = [
    "min", "jun", "seo", "yeon", "ji", "hoon", "woo", "hyun", "su", "jin", "young", "ho", "eun",
    "hye", "dong", "sung", "jae", "kyung", "mi", "sook", "hee", "chul", "tae", "yoon", "na", "ra",
    "bin", "won", "il", "gyu", "ha", "yu", "da", "in", "sang", "bo", "ri", "gi", "han", "so",
];
const SURNAMES: [&str; 10] = [
    "Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim",
];

/// Person p's name, as `GENERATE` writes it from the same two lists: surname
/// p % 10, given name of syllables (p / 10) % 40 and (p / 400) % 40
/// (capitalised).
fn name_of(p: u64) -> String {
    let (a, b) = (
        SYLLABLES[(p / 10 % 40) as usize],
        SYLLABLES[(p / 400 % 40) as usize],
    );
    let mut given = format!("{a}{b}");
    given[..1].make_ascii_uppercase();
    format!("{} {given}", SURNAMES[(p % 10) as usize])
}

/// The union, generated in the database. Person p has a home system (p % 3);
/// every third person is in a second system too, every ninth in all three.
/// Sales has no birth dates; the others spread them over 20,000 days
/// whatever the name. The second system of half the people has a
/// work e-mail. Every 40th person shares the phone of the one before (a
/// family), every 1000th gives one of 20 mobile numbers that 100 people
/// each give (a shop's number: the generic guard), every 500th a
/// representative number (never identifies).
const GENERATE: &str = "
insert into l1.member_union
  (system, source_key, name, name_soundex, phone, phone_kind, phone_identifies, email, birth_date, source_ts_ms, created_ts_ms, updated_at)
select sys, case sys when 'options' then 'M' || p else p::text end, nm, soundex(nm),
       ph, 'mobile', ph <> '+8215881234',
       case when p % 20 = 0 then null
            when sys <> home and p % 2 = 0 then 'p' || p || '@work.example.com'
            else 'p' || p || '@example.com' end,
       case when sys <> 'sales' then date '1950-01-01' + (p * 7919 % 20011 % 20000)::int end,
       1767225600000 + p * 10 + n, 1767225600000 + p * 10 + n, now()
  from (select p, n, home, sys,
               f[1 + p % 10] || ' ' || initcap(s[1 + p / 10 % 40] || s[1 + p / 400 % 40]) as nm,
               case when p % 500 = 3 then '+8215881234'
                    when p % 1000 = 7 then '+82100000' || lpad((p / 1000 % 20)::text, 4, '0')
                    when p % 40 = 1 and p > 1 then '+8210' || lpad(((p - 1) * 104729 % 100000000)::text, 8, '0')
                    else '+8210' || lpad((p * 104729 % 100000000)::text, 8, '0') end as ph
          from (select p, $3::text[] as s, $4::text[] as f, (array['sales','options','crm'])[1 + p % 3] as home,
                       case when p % 9 = 0 then 3 when p % 3 = 0 then 2 else 1 end as copies
                  from generate_series($1::bigint, $2::bigint) p) x,
               lateral (select n, (array['sales','options','crm'])[1 + (p + n) % 3] as sys
                          from generate_series(0, x.copies - 1) n) y) z";

/// People for `records` union records (1 + 1/3 + 1/9 records each).
fn people(records: i64) -> i64 {
    (records as f64 / (1.0 + 1.0 / 3.0 + 1.0 / 9.0)) as i64
}

pub async fn run(url: &str, records: i64, events: usize, workers: usize) -> anyhow::Result<()> {
    let client = pgchain::db::connect(url).await?;
    let p = people(records);
    println!(
        "pgchain bench --identity {records}: {p} people; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pg_peak = PgMemory::watch(url).await?;

    // Generate in slices, so progress shows and no statement is huge.
    let t = Instant::now();
    let slice = 250_000;
    let mut from = 1;
    while from <= p {
        let to = (from + slice - 1).min(p);
        client
            .execute(GENERATE, &[&from, &to, &&SYLLABLES[..], &&SURNAMES[..]])
            .await?;
        from = to + 1;
    }
    client.batch_execute("analyze l1.member_union").await?;
    let union: i64 = client
        .query_one("select count(*) from l1.member_union", &[])
        .await?
        .get(0);
    println!(
        "generated {union} union records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The initial build: set-based.
    let mut build = Duration::ZERO;
    for (what, sql) in [
        ("clusters (idr.rebuild)", "call idr.rebuild()"),
        ("golden records (idr.unify_all)", "call idr.unify_all()"),
        ("outbox (idr.publish_all)", "call idr.publish_all()"),
    ] {
        let t = Instant::now();
        client.batch_execute(sql).await?;
        build += t.elapsed();
        println!("{what:<34} {:>8.1} s", t.elapsed().as_secs_f64());
    }
    let row = client
        .query_one(
            "select (select count(distinct cluster_id) from idr.records),
                    (select count(*) from (select 1 from idr.records group by cluster_id having count(*) > 1) x),
                    (select max(n) from (select count(*) n from idr.records group by cluster_id) x),
                    (select count(*) from idr.generic),
                    (select count(*) from l2.customer_outbox)",
            &[],
        )
        .await?;
    let n = |i: usize| row.get::<_, i64>(i);
    println!(
        "initial build {:.1} s: {} customers ({} of several records, the largest {}), {} generic values, {} outbox rows",
        build.as_secs_f64(),
        n(0),
        n(1),
        n(2),
        n(3),
        n(4)
    );

    // Single change events through the whole chain.
    let figures = single_events(url, p, events, workers).await?;
    let pg = pg_peak.stop();
    println!(
        "{}",
        figures
            .all
            .line(&format!("chain per event, {workers} connections"))
    );
    println!(
        "{}",
        figures.link_unify.line("  of which link + unify steps")
    );
    println!("{}", figures.link.line("  of which link step"));
    println!(
        "peak memory: PostgreSQL {} MiB (proportional set size, all its processes), pgchain {} MiB",
        pg / 1024,
        crate::measure::peak_rss_kib("self") / 1024
    );
    Ok(())
}

struct EventFigures {
    all: Figures,
    link_unify: Figures,
    link: Figures,
}

const SYSTEMS: [&str; 3] = ["sales", "options", "crm"];
const PIPELINES: [&str; 3] = ["sales_customer", "options_member", "crm_contact"];

/// A decoded change event of `system` for person `p`'s record there, with
/// the union values `name`, `phone` (national format) and `email`.
fn change(system: usize, key: &str, op: &str, row: Option<(&str, &str, &str)>, ts: i64) -> Value {
    let after = row.map(|(name, phone, email)| match system {
        0 => json!({"id": key.parse::<i64>().unwrap_or(0), "name": name, "phone": phone, "email": email}),
        1 => json!({"member_no": key, "full_name": name, "mobile": phone, "email_addr": email}),
        _ => {
            let (last, first) = name.split_once(' ').unwrap_or((name, ""));
            json!({"CONTACT_ID": key.parse::<i64>().unwrap_or(0), "FIRST_NAME": first, "LAST_NAME": last,
                   "PHONE": phone, "EMAIL": email})
        }
    });
    let ev_key = match system {
        0 => json!({"id": key.parse::<i64>().unwrap_or(0)}),
        1 => json!({"member_no": key}),
        _ => json!({"CONTACT_ID": key.parse::<i64>().unwrap_or(0)}),
    };
    json!({"op": op, "key": ev_key, "before": null, "after": after,
           "source": {"system": SYSTEMS[system], "ts_ms": ts, "position": format!("{ts:020}")},
           "kafka": {"topic": "bench", "partition": 0, "offset": 0, "timestamp": null},
           "pipeline": PIPELINES[system]})
}

fn phone_of(p: u64) -> String {
    let n = p * 104729 % 100_000_000;
    format!("010-{:04}-{:04}", n / 10_000, n % 10_000)
}

/// The events of one worker: its own people (p % workers), as a partition
/// holds its own keys. A mix of key changes (splits and joins), merges,
/// plain updates, new people and deletes.
fn worker_events(worker: u64, workers: u64, people: u64, n: usize) -> Vec<Value> {
    let mut rng = Lcg(0x5eed + worker);
    let mut out = Vec::with_capacity(n);
    let mut fresh = people * 2 + worker;
    let pick = |rng: &mut Lcg| {
        let p = 1 + rng.next(people / workers) * workers + worker;
        p.min(people)
    };
    for i in 0..n {
        let ts = 1_800_000_000_000 + i as i64;
        let p = pick(&mut rng);
        let home = (p % 3) as usize;
        let key = if home == 1 {
            format!("M{p}")
        } else {
            p.to_string()
        };
        let name = name_of(p);
        let email = format!("p{p}@example.com");
        let ev = match rng.next(100) {
            // A new e-mail: the old key goes (split check), a new one comes.
            0..30 => {
                let e = format!("p{p}.{i}@new.example.com");
                change(home, &key, "u", Some((&name, &phone_of(p), &e)), ts)
            }
            // Nothing that links changes (the name's spacing).
            30..55 => change(
                home,
                &key,
                "u",
                Some((&format!("{name} "), &phone_of(p), &email)),
                ts,
            ),
            // Someone new, half of them with the e-mail of a known person.
            55..80 => {
                fresh += workers;
                let sys = rng.next(3) as usize;
                let k = if sys == 1 {
                    format!("M{fresh}")
                } else {
                    fresh.to_string()
                };
                let q = pick(&mut rng);
                let e = if rng.next(2) == 0 {
                    format!("p{q}@example.com")
                } else {
                    format!("n{fresh}@example.com")
                };
                change(sys, &k, "c", Some(("New Person", &phone_of(fresh), &e)), ts)
            }
            // The phone of another person: a merge (and a split of the old).
            80..90 => {
                let q = pick(&mut rng);
                change(home, &key, "u", Some((&name, &phone_of(q), &email)), ts)
            }
            // Deleted at the source.
            _ => change(home, &key, "d", None, ts),
        };
        out.push(ev);
    }
    out
}

async fn single_events(
    url: &str,
    people: i64,
    events: usize,
    workers: usize,
) -> anyhow::Result<EventFigures> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let url = url.to_string();
        let evs = worker_events(w as u64, workers as u64, people as u64, events / workers);
        tasks.push(tokio::spawn(async move {
            let client = pgchain::db::connect(&url).await?;
            let stmt = client
                .prepare(
                    "call pgchain.apply_event('bench', 'bench', $1, $2, $3, $4, $5, null, null)",
                )
                .await?;
            let mut lat = (Vec::new(), Vec::new(), Vec::new());
            for (offset, ev) in evs.iter().enumerate() {
                // The example's steps are named after their pipeline.
                let pipeline = ev["pipeline"].as_str().unwrap_or_default();
                let (l0, l1) = (
                    format!("l0.copy_{pipeline}"),
                    format!("l1.cleanse_{pipeline}"),
                );
                let steps = [
                    l0.as_str(),
                    l1.as_str(),
                    "idr.link_member",
                    "idr.unify_member",
                    "l2.publish_customer",
                ];
                let t = Instant::now();
                let row = client
                    .query_one(
                        &stmt,
                        &[
                            &(w as i32),
                            &(offset as i64),
                            &pipeline,
                            &&steps[..],
                            &Json(ev),
                        ],
                    )
                    .await?;
                lat.0.push(t.elapsed().as_micros() as u32);
                let status: Option<String> = row.get(0);
                anyhow::ensure!(
                    status.as_deref() == Some("applied"),
                    "event {offset} of worker {w}: {status:?}"
                );
                let ms: Vec<f64> = row.get(1);
                if ms.len() == 5 {
                    lat.1.push(((ms[2] + ms[3]) * 1000.0) as u32);
                    lat.2.push((ms[2] * 1000.0) as u32);
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let (mut all, mut link_unify, mut link) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let (a, b, c) = t.await??;
        all.extend(a);
        link_unify.extend(b);
        link.extend(c);
    }
    let elapsed = start.elapsed();
    let figures = |latencies_us: Vec<u32>| Figures {
        events: latencies_us.len(),
        elapsed,
        latencies_us,
    };
    Ok(EventFigures {
        all: figures(all),
        link_unify: figures(link_unify),
        link: figures(link),
    })
}

/// The peak proportional set size of PostgreSQL's processes together,
/// sampled every 200 ms (shared buffers counted once, not per process).
struct PgMemory {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl PgMemory {
    async fn watch(url: &str) -> anyhow::Result<PgMemory> {
        let client = pgchain::db::connect(url).await?;
        let main_pid: i32 = client
            .query_one(
                "select pid from pg_stat_activity where backend_type = 'checkpointer'",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        let parent = parent_of(main_pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(parent) = parent {
                    p.fetch_max(pss_of_tree(parent), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(PgMemory { stop, peak })
    }

    /// Stops sampling; the peak in KiB (0 when /proc is not readable).
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

/// The parent of process `pid` (field 4 of /proc/pid/stat).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pss of the postmaster `parent` and its children, in KiB.
fn pss_of_tree(parent: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let ppid = parent_of(pid);
        if pid == parent || ppid == Some(parent) {
            total += crate::measure::proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        }
    }
    total
}
