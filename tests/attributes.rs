//! Declared attributes: l1_cleanse fills the entity's own attributes (any
//! schema, not the member columns) from each source's fields, and
//! identity_link's rules are written on them. Input: people of the FEBRL
//! benchmark, an original and its corrupted duplicate from two sources
//! (tests/fixtures/febrl/dataset4.csv names where the rows come from).

mod common;

use common::{TestDb, install, rendered};
use serde_json::{Map, Value, json};
use tokio_postgres::types::Json;

/// The person as the project declares it; every source repeats it (a YAML
/// anchor in a real pipelines.yaml).
const PERSON: &str = "attributes:
  given: {type: name, phonetic: [dmetaphone]}
  surname: {type: name, phonetic: [dmetaphone, soundex]}
  full_name: {type: name, from: [given, surname]}
  street: {type: address}
  suburb: {type: text}
  postcode: {type: postcode}
  birth_date: {type: date}
  national_id: {type: digits}";

/// The originals' source: its own field names, the full name made of the
/// two name attributes (`from`).
const ORG_FIELDS: &str = "fields: {given: given_name, surname: surname, street: [street_number, address_1], suburb: suburb, postcode: postcode, birth_date: date_of_birth, national_id: soc_sec_id}";

/// The duplicates' source writes upper-case names (as GoldenGate does for
/// Oracle) and maps the full name from two fields itself.
const DUP_FIELDS: &str = "fields: {given: GIVEN_NAME, surname: SURNAME, full_name: [GIVEN_NAME, SURNAME], street: [STREET_NUMBER, ADDRESS_1], suburb: SUBURB, postcode: POSTCODE, birth_date: DATE_OF_BIRTH, national_id: SOC_SEC_ID}";

fn cleanse_vars(system: &str, fields: &str) -> String {
    format!("target: people.person\nsystem: {system}\nkey: [rec]\n{PERSON}\n{fields}")
}

/// The fixture's rows: (system, number, row as the source sends it).
fn febrl() -> Vec<(String, String, Map<String, Value>)> {
    let text = include_str!("fixtures/febrl/dataset4.csv");
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<&str> = lines.next().unwrap().split(',').map(str::trim).collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let parts: Vec<&str> = cells[0].split('-').collect();
            let system = if parts[2] == "org" { "org" } else { "dup" };
            let mut row = Map::new();
            row.insert("rec".into(), json!(parts[1]));
            for (name, cell) in header.iter().zip(&cells).skip(1) {
                let name = if system == "dup" {
                    name.to_uppercase()
                } else {
                    name.to_string()
                };
                row.insert(name, json!(cell));
            }
            (system.to_string(), parts[1].to_string(), row)
        })
        .collect()
}

fn event(row: &Map<String, Value>, ts: i64) -> Value {
    json!({"op": "c", "key": {"rec": row["rec"]}, "before": null, "after": row,
           "source": {"ts_ms": ts}, "kafka": {"topic": "t", "partition": 0, "offset": ts}})
}

async fn call(db: &TestDb, procedure: &str, ev: &Value) -> Value {
    let row = db
        .client()
        .await
        .query_one(&format!("call {procedure}($1)"), &[&Json(ev)])
        .await
        .unwrap_or_else(|e| panic!("{procedure}: {e:?}"));
    let Json(out): Json<Value> = row.get(0);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_attributes_fill_the_union_and_rules_link_on_them() {
    let db = TestDb::new("attributes").await;
    install(
        &db,
        "people.cleanse_org",
        "l1_cleanse",
        &cleanse_vars("org", ORG_FIELDS),
    )
    .await;
    install(
        &db,
        "people.cleanse_dup",
        "l1_cleanse",
        &cleanse_vars("dup", DUP_FIELDS),
    )
    .await;
    // Exact rules on the declared attributes, one on phonetic keys.
    install(
        &db,
        "people.link",
        "identity_link",
        "schema: people_idr\nsource: people.person\nrules:\n  name_dob: {columns: [full_name, birth_date]}\n  sounds_dob: {columns: [given_dmetaphone, surname_soundex, birth_date]}",
    )
    .await;
    for (n, (system, _, row)) in febrl().iter().enumerate() {
        let ev = call(
            &db,
            &format!("people.cleanse_{system}"),
            &event(row, n as i64),
        )
        .await;
        call(&db, "people.link", &ev).await;
    }

    // Every attribute in its column, clean; a name of two parts is null
    // when a part is blank (so a name rule never loosens to a surname).
    let rows = db
        .strings(
            "select array_to_string(array[system, source_key, given, surname, full_name, given_dmetaphone, surname_dmetaphone,
                    surname_soundex, street, suburb, postcode, birth_date::text, national_id], '|', '')
               from people.person order by source_key::int, system desc",
        )
        .await;
    assert_eq!(
        rows,
        [
            "org|561|jack|||JK|||3 light street|windermere|3212|1965-10-13|1551941",
            "dup|561|elton|||ALTN|||3 light setreet|windermere|3212|1965-10-13|1551941",
            "org|608|mitchell|white|mitchell white|MXL|AT|W300|72 lambrigg street|broadbeach waters|3150|1962-02-16|9731855",
            "dup|608||white|||AT|W300|72 lambrigg street|broadbeach waters|3159|1962-02-16|9731855",
            "org|825|mia|white|mia white|M|AT|W300|6 national circuit|narembeen|2765|1913-04-18|5053650",
            "dup|825|mia|wnite|mia wnite|M|NT|W530|1329 national circuit|narembeen|2765|1913-04-18|5053650",
            "org|2642|mitchell|mason|mitchell mason|MXL|MSN|M250|47 edkins street|north ryde|3355|1939-02-12|8859999",
            "dup|2642|mitchell|maxon|mitchell maxon|MXL|MKSN|M250|47 edkins street|north ryde|3355|1939-02-12|8859999",
            "org|4285|sophie|manson|sophie manson|SF|MNSN|M525|14 elizabeth crescent|gorokan|3465|1951-02-01|4818868",
            "dup|4285|sophie|manson|sophie manson|SF|MNSN|M525|14 elizabeth xrescent|gorokan|3465|1951-02-01|4818868",
        ]
    );
    assert_eq!(
        db.strings("select column_name || ' ' || data_type from information_schema.columns where table_schema = 'people' and column_name in ('birth_date', 'national_id') order by 1").await,
        ["birth_date date", "national_id text"]
    );

    // sophie manson links by name and birth date; mitchell mason/maxon by
    // how the names sound; the others stay apart (a blank part, a typo
    // soundex does not forgive).
    let together = db
        .strings(
            "select string_agg(system || ':' || source_key, ' ' order by system desc) from people_idr.records
              group by cluster_id having count(*) > 1 order by 1",
        )
        .await;
    assert_eq!(together, ["org:2642 dup:2642", "org:4285 dup:4285"]);
    let why = db
        .strings("select rule from people_idr.explain('org', '2642', 'dup', '2642')")
        .await;
    assert_eq!(why, ["sounds_dob"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_declares_an_attribute_with_another_type_fails_to_migrate() {
    let db = TestDb::new("attributes_types").await;
    install(
        &db,
        "people.cleanse_org",
        "l1_cleanse",
        &cleanse_vars("org", ORG_FIELDS),
    )
    .await;
    let other = "target: people.person\nsystem: crm\nkey: [rec]\nattributes:\n  given: {type: name}\n  birth_date: {type: text}\nfields: {given: given, birth_date: dob}";
    let sql = rendered("people.cleanse_crm", "l1_cleanse", other).unwrap();
    let err = db.client().await.batch_execute(&sql).await.unwrap_err();
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "42804");
    assert_eq!(
        db_err.message(),
        "people.cleanse_crm: attribute birth_date is declared type text here, but the union has it as date"
    );
}

#[test]
fn mistakes_in_declared_attributes_are_render_errors_that_name_them() {
    let base = "target: p.person\nsystem: a\nkey: [id]\n";
    let cases = [
        (
            "attributes:\n  nid: {type: number}\nfields: {nid: n}",
            "attribute `nid`: type must be one of name, text, phone, email, date, postcode, address, digits",
        ),
        (
            "attributes:\n  nid: {type: digits, normalise: true}\nfields: {nid: n}",
            "attribute `nid`: unknown key `normalise` (type, phonetic, from, strip_honorifics)",
        ),
        (
            "attributes:\n  nid: {type: digits}\nfields: {national_id: n}",
            "fields: `national_id` is not one of the declared attributes",
        ),
        (
            "attributes:\n  full: {type: name, from: [given, family]}\n  given: {type: name}\n  family: {type: name}\nfields: {given: g}",
            "attribute `full`: from names `given`, which must be an attribute declared before it",
        ),
        (
            "attributes:\n  born: {type: date, phonetic: [soundex]}\nfields: {born: b}",
            "attribute `born`: phonetic keys are for name, text and address attributes",
        ),
        (
            "attributes:\n  nick: {type: name, phonetic: [nysiis]}\nfields: {nick: n}",
            "attribute `nick`: unknown phonetic key `nysiis` (dmetaphone, dmetaphone_alt, soundex, metaphone)",
        ),
        (
            "attributes:\n  source_key: {type: text}\nfields: {source_key: k}",
            "attribute `source_key`: the union has a column of that name already",
        ),
        (
            "attributes:\n  given: {type: name}\nname: given",
            "with `attributes`, a source maps its fields in `fields` (name, phone, email, birth_date, address and building_id are the vars of a union without attributes)",
        ),
    ];
    for (vars, says) in cases {
        let err = rendered("p.cleanse", "l1_cleanse", &format!("{base}{vars}")).unwrap_err();
        assert!(
            err.starts_with("t.yaml:") && err.contains(says),
            "{vars}\n=> {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scored_rule_links_a_typo_pair_and_swapped_names_and_explains_its_score() {
    let db = TestDb::new("attributes_scored").await;
    // Jaro-Winkler as its authors give it (Winkler 1990; the values every
    // implementation checks): MARTHA/MARHTA, DWAYNE/DUANE, DIXON/DICKSONX.
    assert_eq!(
        db.strings("select array_to_string(array[round(pgchain.jaro_winkler('martha', 'marhta')::numeric, 4), round(pgchain.jaro_winkler('dwayne', 'duane')::numeric, 4), round(pgchain.jaro_winkler('dixon', 'dicksonx')::numeric, 4)], ' ')").await,
        ["0.9611 0.8400 0.8133"]
    );
    assert_eq!(
        db.strings("select concat_ws(' ', pgchain.transposed('19390212', '19392112'), pgchain.transposed('19390212', '19390221'), pgchain.transposed('abc', 'abd'), pgchain.swap_day_month('2001-02-11'), pgchain.swap_day_month('2001-02-13'))").await,
        ["f t f 2001-11-02"]
    );
    for (system, fields) in [
        ("org", ORG_FIELDS),
        ("dup", DUP_FIELDS),
        ("swp", ORG_FIELDS),
        ("nck", ORG_FIELDS),
    ] {
        install(
            &db,
            &format!("people.cleanse_{system}"),
            "l1_cleanse",
            &cleanse_vars(system, fields),
        )
        .await;
    }
    // No exact rule: the scored rule alone, without the national id, so
    // what links is what the names, the birth date and the postcode say.
    install(
        &db,
        "people.link",
        "identity_link",
        "schema: people_idr\nsource: people.person\nrules: {}\nscored:
  person:
    blocks: [[birth_date], [given_dmetaphone, surname_soundex]]
    threshold: 10
    compare:
      given: [{exact: true, weight: 3}, {swapped: surname, weight: 3}, {nickname: true, weight: 2}, {jaro_winkler: 0.85, weight: 2}, {else: -2}]
      surname: [{exact: true, weight: 3}, {swapped: given, weight: 3}, {jaro_winkler: 0.85, weight: 2}, {else: -3}]
      birth_date: [{exact: true, weight: 5}, {day_month_swapped: true, weight: 3}, {transposed: true, weight: 3}, {else: -6}]
      postcode: [{exact: true, weight: 1}, {levenshtein: 1, weight: 0.5}, {else: -1}]",
    )
    .await;
    let mut rows = febrl();
    let org = |rec: &str| {
        rows.iter()
            .find(|(s, n, _)| s == "org" && n == rec)
            .unwrap()
            .2
            .clone()
    };
    // A fourth register knows mitchell white (rec 608) as mitch.
    let mut nickname = org("608");
    nickname.insert("given_name".into(), json!("mitch"));
    // The swapping register wrote mia white (rec 825) as a surname alone:
    // her given name in the family name field, the given name blank.
    let mut half = org("825");
    half.insert("given_name".into(), json!(""));
    half.insert("surname".into(), json!("mia"));
    // A third register writes sophie manson (rec 4285) with given and
    // family name swapped.
    let mut swapped = org("4285");
    swapped.insert("given_name".into(), json!("manson"));
    swapped.insert("surname".into(), json!("sophie"));
    rows.push(("swp".into(), "4285".into(), swapped));
    rows.push(("swp".into(), "825".into(), half));
    rows.push(("nck".into(), "608".into(), nickname));
    for (n, (system, _, row)) in rows.iter().enumerate() {
        let ev = call(
            &db,
            &format!("people.cleanse_{system}"),
            &event(row, n as i64),
        )
        .await;
        call(&db, "people.link", &ev).await;
    }
    let together = db
        .strings(
            "select string_agg(system || ':' || source_key, ' ' order by system desc) from people_idr.records
              group by cluster_id having count(*) > 1 order by 1",
        )
        .await;
    // mia white / mia wnite (a typo) and mitchell mason / maxon link on
    // their score; sophie manson with her swapped copy too, and mitchell
    // white with mitch white (a nickname). jack / elton (another given
    // name, no surname) and mitchell white / _ white (no given name,
    // another postcode) stay under the threshold; so does mia alone in the
    // family name field (swapped, 9: nothing but the birth date and the
    // postcode besides).
    assert_eq!(
        together,
        [
            "org:2642 dup:2642",
            "org:608 nck:608",
            "org:825 dup:825",
            "swp:4285 org:4285 dup:4285"
        ]
    );
    let nick = db
        .strings("select matched->'compared'->'given'->>'level' from people_idr.explain('org', '608', 'nck', '608')")
        .await;
    assert_eq!(nick, ["nickname"]);
    let half = db
        .strings("select concat_ws(' ', c->'compared'->'given'->>'level', c->'compared'->'surname'->>'level', c->>'score') from people_idr.compare('person', 'org', '825', 'swp', '825') c")
        .await;
    assert_eq!(half, ["missing swapped 9"]);
    // Why: the pair, its score, and each compared column's values and level.
    let why: Value = db
        .client()
        .await
        .query_one(
            "select jsonb_agg(jsonb_build_object('rule', rule, 'matched', matched)) from people_idr.explain('org', '825', 'dup', '825')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Json<Value>>(0)
        .0;
    let hop = &why[0];
    assert_eq!(hop["rule"], "person");
    assert_eq!(hop["matched"]["pair"], json!(["dup:825", "org:825"]));
    assert_eq!(hop["matched"]["score"].as_f64(), Some(11.0));
    assert_eq!(hop["matched"]["threshold"], json!(10));
    assert_eq!(
        hop["matched"]["compared"]["surname"],
        json!({"a": "wnite", "b": "white", "level": "jaro_winkler", "weight": 2})
    );
    assert_eq!(hop["matched"]["compared"]["given"]["level"], json!("exact"));
    let swap = db
        .strings("select matched->'compared'->'given'->>'level' from people_idr.explain('org', '4285', 'swp', '4285')")
        .await;
    assert_eq!(swap, ["swapped"]);
    // rebuild finds the same.
    db.exec("call people_idr.rebuild()").await;
    let again = db
        .strings(
            "select string_agg(system || ':' || source_key, ' ' order by system desc) from people_idr.records
              group by cluster_id having count(*) > 1 order by 1",
        )
        .await;
    assert_eq!(again, together);
}

#[test]
fn mistakes_in_a_scored_rule_are_render_errors_that_name_them() {
    let base = "schema: g\nsource: g.u\nrules:\n  email: {columns: [email]}\nscored:\n";
    for (rule, says) in [
        (
            "  email: {blocks: [[a]], threshold: 1, compare: {a: [{exact: true, weight: 1}]}}",
            "named like another rule",
        ),
        (
            "  s: {threshold: 1, compare: {a: [{exact: true, weight: 1}]}}",
            "needs `blocks`",
        ),
        (
            "  s: {blocks: [a], threshold: 1, compare: {a: [{exact: true, weight: 1}]}}",
            "each block is a list of columns",
        ),
        (
            "  s: {blocks: [[a]], threshold: high, compare: {a: [{exact: true, weight: 1}]}}",
            "numeric `threshold`",
        ),
        ("  s: {blocks: [[a]], threshold: 1}", "needs `compare`"),
        (
            "  s: {blocks: [[a]], threshold: 1, compare: {a: [{soundalike: true, weight: 1}]}}",
            "a level is one of exact, jaro_winkler",
        ),
        (
            "  s: {blocks: [[a]], threshold: 1, compare: {a: [{exact: true}]}}",
            "needs a numeric `weight`",
        ),
        (
            "  s: {blocks: [[a]], threshold: 1, compare: {a: [{else: -1}, {exact: true, weight: 1}]}}",
            "`else` is the last level",
        ),
        (
            "  s: {blocks: [[a]], threshold: 1, compare: {a: [{exact: true, weight: 1}]}, conflicts: [b]}",
            "`b` is not a compared column",
        ),
    ] {
        let err = rendered("g.link", "identity_link", &format!("{base}{rule}")).unwrap_err();
        assert!(err.contains(says), "{rule}: {err}");
        assert!(err.contains("t.yaml"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_estimate_proposes_weights_from_pairs_that_share_a_national_id() {
    let db = TestDb::new("attributes_estimate").await;
    for (system, fields) in [("org", ORG_FIELDS), ("dup", DUP_FIELDS)] {
        install(
            &db,
            &format!("people.cleanse_{system}"),
            "l1_cleanse",
            &cleanse_vars(system, fields),
        )
        .await;
    }
    let link = "schema: people_idr\nsource: people.person\nrules:\n  national_id: {columns: [national_id]}\nscored:
  person:
    blocks: [[birth_date]]
    threshold: 10
    compare:
      national_id: [{exact: true, weight: 9}, {else: -9}]
      given: [{exact: true, weight: 1}, {jaro_winkler: 0.85, weight: 1}, {else: -1}]
      postcode: [{exact: true, weight: 1}, {else: -1}]";
    install(&db, "people.link", "identity_link", link).await;
    for (n, (system, _, row)) in febrl().iter().enumerate() {
        let ev = call(
            &db,
            &format!("people.cleanse_{system}"),
            &event(row, n as i64),
        )
        .await;
        call(&db, "people.link", &ev).await;
    }
    // The project's pipelines.yaml, as a steward has it.
    let dir = common::temp_dir("estimate");
    let config = dir.join("pipelines.yaml");
    let vars: String = link.lines().map(|l| format!("      {l}\n")).collect();
    std::fs::write(
        &config,
        format!(
            "kafka:\n  brokers: localhost:9092\npostgres:\n  url: ${{DATABASE_URL}}\npipelines:\n  p:\n    topic: t\n    chain: [people.link]\nprocedures:\n  people.link:\n    template: identity_link\n    vars:\n{vars}"
        ),
    )
    .unwrap();
    let out_file = dir.join("weights.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args([
            "identity", "estimate", "--rule", "person", "--pairs", "100", "-c",
        ])
        .arg(&config)
        .arg("--out")
        .arg(&out_file)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    // m from the five FEBRL pairs sharing a national id, u from random pairs.
    assert!(
        table.contains("m from 5 pairs sharing national_id"),
        "{table}"
    );
    assert!(
        table.contains("national_id    (a column of the truth rule: weights kept)"),
        "{table}"
    );
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let compare = &yaml["compare"];
    // The truth rule's column as configured; the others estimated: exact
    // postcodes are far likelier in one person's pairs than in random ones
    // (4 of 5 against none), a different postcode far less.
    assert_eq!(
        compare["national_id"][0]["weight"],
        serde_yaml::Value::from(9)
    );
    let postcode_exact = compare["postcode"][0]["weight"].as_f64().unwrap();
    let postcode_else = compare["postcode"][1]["else"].as_f64().unwrap();
    assert!(postcode_exact > 1.0 && postcode_else < 0.0, "{compare:?}");
    assert_eq!(compare["given"][1]["jaro_winkler"].as_f64(), Some(0.85));
    // A rule that is not there is an error that says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["identity", "estimate", "--rule", "nobody", "-c"])
        .arg(&config)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the graph has no scored rule `nobody`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
