//! The built-in templates' behaviour, rendered from sql/templates and run on
//! real PostgreSQL: each test renders a procedure, applies it and calls it
//! with change events the way pgchain would.

mod common;

use common::{TestDb, install};
use serde_json::{Value, json};
use tokio_postgres::types::Json;

/// A change event as pgchain passes it to a step.
fn ev(op: &str, key: Value, after: Option<Value>, ts_ms: i64) -> Value {
    json!({"op": op, "key": key, "before": null, "after": after,
           "source": {"system": "s", "schema": "public", "table": "t", "ts_ms": ts_ms, "position": (ts_ms * 10).to_string()},
           "kafka": {"topic": "t", "partition": 0, "offset": ts_ms, "timestamp": null}, "pipeline": "p"})
}

async fn call(db: &TestDb, procedure: &str, ev: Value) -> Result<(), tokio_postgres::Error> {
    db.client()
        .await
        .execute(&format!("call {procedure}($1)"), &[&Json(ev)])
        .await
        .map(|_| ())
}

const CUSTOMER: &str =
    "table: l0.customer\ncolumns: {id: bigint, name: text, phone: text}\nkey: [id]";

#[tokio::test(flavor = "multi_thread")]
async fn l0_upsert_copies_inserts_updates_and_deletes() {
    let db = TestDb::new("l0_crud").await;
    install(&db, "l0.copy_customer", "l0_upsert", CUSTOMER).await;
    let p = "l0.copy_customer";
    call(
        &db,
        p,
        ev(
            "c",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "Kim", "phone": "010-1"})),
            100,
        ),
    )
    .await
    .unwrap();
    call(
        &db,
        p,
        ev(
            "r",
            json!({"id": 2}),
            Some(json!({"id": 2, "name": "Lee", "phone": null})),
            100,
        ),
    )
    .await
    .unwrap();
    call(
        &db,
        p,
        ev(
            "u",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "Kim", "phone": "010-2"})),
            200,
        ),
    )
    .await
    .unwrap();
    let rows = db.strings("select concat_ws(' ', id, name, coalesce(phone, '-'), _source_ts_ms, _source_position) from l0.customer order by id").await;
    assert_eq!(rows, ["1 Kim 010-2 200 2000", "2 Lee - 100 1000"]);

    call(&db, p, ev("d", json!({"id": 2}), None, 300))
        .await
        .unwrap();
    assert_eq!(db.strings("select id::text from l0.customer").await, ["1"]);
    // A redelivered event changes nothing.
    call(
        &db,
        p,
        ev(
            "u",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "Kim", "phone": "010-2"})),
            200,
        ),
    )
    .await
    .unwrap();
    call(&db, p, ev("d", json!({"id": 2}), None, 300))
        .await
        .unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', id, phone) from l0.customer")
            .await,
        ["1 010-2"]
    );
    // A truncate empties the copy.
    call(&db, p, ev("t", json!({}), None, 400)).await.unwrap();
    assert_eq!(db.i64("select count(*) from l0.customer").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn l0_upsert_ignores_an_event_older_than_the_row() {
    let db = TestDb::new("l0_stale").await;
    install(&db, "l0.copy_customer", "l0_upsert", CUSTOMER).await;
    let p = "l0.copy_customer";
    call(
        &db,
        p,
        ev(
            "u",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "new", "phone": "2"})),
            200,
        ),
    )
    .await
    .unwrap();
    call(
        &db,
        p,
        ev(
            "u",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "old", "phone": "1"})),
            150,
        ),
    )
    .await
    .unwrap();
    call(&db, p, ev("d", json!({"id": 1}), None, 180))
        .await
        .unwrap();
    assert_eq!(
        db.strings("select name from l0.customer").await,
        ["new"],
        "older update and delete lost to the newer row"
    );
    call(
        &db,
        p,
        ev(
            "u",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "newer", "phone": "3"})),
            200,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        db.strings("select name from l0.customer").await,
        ["newer"],
        "the same time still applies, in order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn l0_upsert_soft_deletes_and_revives() {
    let db = TestDb::new("l0_soft").await;
    install(
        &db,
        "l0.copy_customer",
        "l0_upsert",
        &format!("{CUSTOMER}\ndelete: soft"),
    )
    .await;
    let p = "l0.copy_customer";
    call(
        &db,
        p,
        ev(
            "c",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "Kim", "phone": "1"})),
            100,
        ),
    )
    .await
    .unwrap();
    call(
        &db,
        p,
        ev(
            "c",
            json!({"id": 2}),
            Some(json!({"id": 2, "name": "Lee", "phone": "2"})),
            100,
        ),
    )
    .await
    .unwrap();
    call(&db, p, ev("d", json!({"id": 1}), None, 200))
        .await
        .unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', id, name, _deleted) from l0.customer order by id")
            .await,
        ["1 Kim t", "2 Lee f"]
    );
    call(
        &db,
        p,
        ev(
            "c",
            json!({"id": 1}),
            Some(json!({"id": 1, "name": "Kim2", "phone": "1"})),
            300,
        ),
    )
    .await
    .unwrap();
    call(&db, p, ev("t", json!({}), None, 400)).await.unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', id, name, _deleted) from l0.customer order by id")
            .await,
        ["1 Kim2 t", "2 Lee t"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn l0_upsert_maps_goldengate_names_and_guards_by_position() {
    let db = TestDb::new("l0_ogg").await;
    let vars = "table: l0.crm_contact\ncolumns: {contact_id: bigint, email: text, order: text}\nkey: [contact_id]\n\
                fields: {contact_id: CONTACT_ID, email: EMAIL}\nstale_guard: position";
    install(&db, "l0.copy_contact", "l0_upsert", vars).await;
    let p = "l0.copy_contact";
    let mut e = ev(
        "c",
        json!({"CONTACT_ID": 7}),
        Some(json!({"CONTACT_ID": 7, "EMAIL": "a@x.kr", "order": "vip"})),
        100,
    );
    e["source"]["position"] = json!("00000000030000002217");
    call(&db, p, e.clone()).await.unwrap();
    // Same ts_ms, older trail position: ignored by the position guard.
    let mut old = e.clone();
    old["after"]["EMAIL"] = json!("old@x.kr");
    old["source"]["position"] = json!("00000000030000001532");
    call(&db, p, old).await.unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', contact_id, email, \"order\") from l0.crm_contact")
            .await,
        ["7 a@x.kr vip"]
    );
    let mut del = ev("d", json!({"CONTACT_ID": 7}), None, 100);
    del["source"]["position"] = json!("00000000030000002904");
    call(&db, p, del).await.unwrap();
    assert_eq!(db.i64("select count(*) from l0.crm_contact").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_compare_as_numbers_or_binlog_coordinates() {
    let db = TestDb::new("positions").await;
    let cases = [
        ("100", "99", true),
        ("99", "100", false),
        ("24023128", "24023128", true),
        ("00000000030000002217", "00000000030000001532", true),
        ("mysql-bin.000003:154", "mysql-bin.000002:99999", true),
        ("mysql-bin.000003:154", "mysql-bin.000003:2000", false),
    ];
    for (a, b, want) in cases {
        let got: bool = db
            .client()
            .await
            .query_one("select pgchain.position_at_or_after($1, $2)", &[&a, &b])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{a} vs {b}");
    }
}

const BASE: &str = "target: tgt.campaign_member\nkey: {member_id: bigint}\nsource: member\nbase: true\nprovides: member\ncolumns: {name: text, grade: text}";
const CONSENT: &str = "target: tgt.campaign_member\nkey: {member_id: bigint}\nsource: consent\nbase: false\nawaits: member\n\
                       columns: {sms_ok: boolean, email_ok: boolean}\nfields: {member_id: MEMBER_ID}";

#[tokio::test(flavor = "multi_thread")]
async fn consolidate_builds_one_row_from_base_and_side_tables() {
    let db = TestDb::new("consolidate").await;
    install(&db, "tgt.member_base", "consolidate", BASE).await;
    install(&db, "tgt.member_consent", "consolidate", CONSENT).await;
    let (base, side) = ("tgt.member_base", "tgt.member_consent");
    let consent = |id: i64, sms: bool, ts: i64| {
        ev(
            "u",
            json!({"MEMBER_ID": id}),
            Some(json!({"MEMBER_ID": id, "sms_ok": sms, "email_ok": !sms})),
            ts,
        )
    };

    // The side row first: it waits for its base row, naming the key.
    let err = call(&db, side, consent(123, true, 100)).await.unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "PGW01");
    assert_eq!(db_err.detail(), Some("member:123"));
    assert_eq!(db.i64("select count(*) from tgt.campaign_member").await, 0);

    // The base row arrives; the retried side row now lands.
    call(
        &db,
        base,
        ev(
            "c",
            json!({"member_id": 123}),
            Some(json!({"member_id": 123, "name": "Kim", "grade": "gold"})),
            110,
        ),
    )
    .await
    .unwrap();
    call(&db, side, consent(123, true, 100)).await.unwrap();
    let row =
        "select concat_ws(' ', member_id, name, grade, sms_ok, email_ok) from tgt.campaign_member";
    assert_eq!(db.strings(row).await, ["123 Kim gold t f"]);

    // Each source updates only its columns, and an older side row loses.
    call(
        &db,
        base,
        ev(
            "u",
            json!({"member_id": 123}),
            Some(json!({"member_id": 123, "name": "Kim", "grade": "vip"})),
            120,
        ),
    )
    .await
    .unwrap();
    call(&db, side, consent(123, false, 130)).await.unwrap();
    call(&db, side, consent(123, true, 90)).await.unwrap();
    assert_eq!(db.strings(row).await, ["123 Kim vip f t"]);

    // A side delete clears its columns; a base delete removes the row.
    call(&db, side, ev("d", json!({"MEMBER_ID": 123}), None, 140))
        .await
        .unwrap();
    assert_eq!(db.strings(row).await, ["123 Kim vip"]);
    call(&db, base, ev("d", json!({"member_id": 123}), None, 150))
        .await
        .unwrap();
    assert_eq!(db.i64("select count(*) from tgt.campaign_member").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_side_row_before_its_base_row_is_parked_and_lands_once_the_base_arrives() {
    use common::{Kafka, config, record, start};
    let db = TestDb::new("consolidate_run").await;
    install(&db, "tgt.member_base", "consolidate", BASE).await;
    install(&db, "tgt.member_consent", "consolidate", CONSENT).await;
    let kafka = Kafka::new(&[("crm.member", 1), ("crm.consent", 1)]);
    let yaml = "kafka:\n  brokers: {brokers}\n  group_id: g1\npostgres:\n  url: {url}\n\
                pipelines:\n  member:\n    topic: crm.member\n    chain: [tgt.member_base]\n\
                \x20 consent:\n    topic: crm.consent\n    chain: [tgt.member_consent]\n";
    let consent = json!({"op": "c", "after": {"MEMBER_ID": 5, "sms_ok": true, "email_ok": true}, "source": {"table": "consent", "ts_ms": 10}});
    kafka
        .produce(vec![record(
            "crm.consent",
            Some(r#"{"MEMBER_ID":5}"#),
            Some(&consent.to_string()),
        )])
        .await;
    let run = start(config(yaml, &kafka, &db));
    // The consent event is retried while its member is missing, then parked.
    run.until("the consent event to be parked", |s| {
        s.pipelines.get("consent").is_some_and(|c| c.parked == 1)
    })
    .await;
    assert_eq!(
        db.strings("select awaits from pgchain.dead_letters where status = 'parked'")
            .await,
        ["member:5"]
    );
    assert_eq!(db.i64("select count(*) from tgt.campaign_member").await, 0);
    let member = json!({"op": "c", "after": {"member_id": 5, "name": "Lee", "grade": "silver"}, "source": {"table": "member", "ts_ms": 20}});
    kafka
        .produce(vec![record(
            "crm.member",
            Some(r#"{"member_id":5}"#),
            Some(&member.to_string()),
        )])
        .await;
    run.drained(&kafka, &["crm.member", "crm.consent"]).await;
    // Providing member:5 re-drives the parked consent at once.
    run.until("the consent event to be replayed", |s| {
        s.pipelines.get("consent").is_some_and(|c| c.replayed == 1)
    })
    .await;
    run.stop().await;
    let row = db.strings("select concat_ws(' ', member_id, name, grade, sms_ok, email_ok) from tgt.campaign_member").await;
    assert_eq!(row, ["5 Lee silver t t"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_cleanse_normalises_each_source_into_the_union() {
    let db = TestDb::new("l1").await;
    install(&db, "l1.cleanse_sales", "l1_cleanse", "target: l1.union\nsystem: sales\nkey: [id]\nname: name\nphone: phone\nemail: email\nbirth_date: birth").await;
    install(
        &db,
        "l1.cleanse_crm",
        "l1_cleanse",
        "target: l1.union\nsystem: crm\nkey: [CONTACT_ID]\nname: [LAST_NAME, FIRST_NAME]\nphone: PHONE\naddress: ADDR\nbuilding_id: BLDG\nstrip_honorifics: true",
    )
    .await;
    let sales = |id: i64, phone: &str, ts: i64| {
        ev(
            "u",
            json!({"id": id}),
            Some(
                json!({"id": id, "name": "  Kim   Minjun ", "phone": phone, "email": " Minjun@Example.COM ", "birth": "850312"}),
            ),
            ts,
        )
    };
    call(&db, "l1.cleanse_sales", sales(1, "010-1234-5678", 100))
        .await
        .unwrap();
    call(&db, "l1.cleanse_sales", sales(2, "1588-1234", 100))
        .await
        .unwrap();
    let crm = ev(
        "c",
        json!({"CONTACT_ID": 9}),
        Some(
            json!({"CONTACT_ID": 9, "LAST_NAME": "Lee", "FIRST_NAME": "Seoyeon 님", "PHONE": "+82 10 9999 0000", "ADDR": "서울 강남구, 테헤란로 1", "BLDG": null}),
        ),
        100,
    );
    call(&db, "l1.cleanse_crm", crm).await.unwrap();
    let rows = "select concat_ws('|', system, source_key, name, phone, phone_kind, phone_identifies, email, birth_date, address, address_key) from l1.union order by system, source_key";
    assert_eq!(
        db.strings(rows).await,
        [
            "crm|9|Lee Seoyeon|+821099990000|mobile|t|서울 강남구 테헤란로 1|서울 강남구 테헤란로 1",
            "sales|1|Kim Minjun|+821012345678|mobile|t|minjun@example.com|1985-03-12",
            "sales|2|Kim Minjun|+8215881234|representative|f|minjun@example.com|1985-03-12",
        ]
    );
    // An older event loses; a delete removes only its own source's row.
    call(&db, "l1.cleanse_sales", sales(1, "02-123-4567", 50))
        .await
        .unwrap();
    call(
        &db,
        "l1.cleanse_sales",
        ev("d", json!({"id": 2}), None, 200),
    )
    .await
    .unwrap();
    assert_eq!(
        db.strings("select system || source_key || ':' || phone from l1.union order by 1")
            .await,
        ["crm9:+821099990000", "sales1:+821012345678"]
    );
    // A name of two fields is null when one is blank: a rule on the name
    // never matches on the surname alone.
    let no_first = ev(
        "c",
        json!({"CONTACT_ID": 10}),
        Some(json!({"CONTACT_ID": 10, "LAST_NAME": "Lee", "FIRST_NAME": " ", "PHONE": null})),
        250,
    );
    call(&db, "l1.cleanse_crm", no_first).await.unwrap();
    assert_eq!(
        db.strings("select source_key || ':' || coalesce(name, '(none)') from l1.union where system = 'crm' order by 1")
            .await,
        ["10:(none)", "9:Lee Seoyeon"]
    );
    call(&db, "l1.cleanse_crm", ev("t", json!({}), None, 300))
        .await
        .unwrap();
    assert_eq!(db.strings("select system from l1.union").await, ["sales"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_upsert_writes_a_users_table_without_extra_columns() {
    let db = TestDb::new("sink").await;
    // The user's own table, with a column the sink does not write.
    db.exec("create schema crm; create table crm.member (member_no text primary key, grade text, note text default 'kept')").await;
    install(&db, "crm.sink_member", "sink_upsert", "table: crm.member\ncolumns: {member_no: text, grade: text}\nkey: [member_no]\ncreate: false").await;
    let p = "crm.sink_member";
    let up = |grade: &str, ts: i64| {
        ev(
            "u",
            json!({"member_no": "M1"}),
            Some(json!({"member_no": "M1", "grade": grade})),
            ts,
        )
    };
    call(&db, p, up("silver", 100)).await.unwrap();
    call(&db, p, up("gold", 200)).await.unwrap();
    call(&db, p, up("bronze", 150)).await.unwrap();
    call(&db, p, up("gold", 200)).await.unwrap();
    let row = "select concat_ws(' ', member_no, grade, note) from crm.member";
    assert_eq!(
        db.strings(row).await,
        ["M1 gold kept"],
        "older lost, redelivery harmless"
    );
    let cols = db.i64("select count(*) from information_schema.columns where table_schema = 'crm' and table_name = 'member'").await;
    assert_eq!(cols, 3, "no bookkeeping columns in the user's table");

    call(&db, p, ev("d", json!({"member_no": "M1"}), None, 300))
        .await
        .unwrap();
    assert_eq!(db.i64("select count(*) from crm.member").await, 0);
    // A late insert older than the delete does not bring the row back.
    call(&db, p, up("silver", 250)).await.unwrap();
    assert_eq!(db.i64("select count(*) from crm.member").await, 0);
    call(&db, p, up("vip", 400)).await.unwrap();
    call(&db, p, ev("t", json!({}), None, 500)).await.unwrap();
    assert_eq!(db.i64("select count(*) from crm.member").await, 0);
    assert_eq!(
        db.i64("select count(*) from pgchain.sink_versions where target = 'crm.member'")
            .await,
        0
    );
}

/// `ev` with the columns the source did not send listed in `unchanged`.
fn with_unchanged(mut ev: Value, unchanged: &[&str]) -> Value {
    ev["unchanged"] = json!(unchanged);
    ev
}

/// The procedure's table as `id bio doc-type doc tags` lines.
const TEXT_AND_JSON: &str = "select concat_ws(' | ', id, coalesce(bio, '-'), jsonb_typeof(doc), doc::text, tags::text) from l0.article order by id";

#[tokio::test(flavor = "multi_thread")]
async fn l0_upsert_keeps_unchanged_columns_and_reads_json_as_json() {
    let db = TestDb::new("l0_unchanged").await;
    install(
        &db,
        "l0.copy_article",
        "l0_upsert",
        "table: l0.article\ncolumns: {id: bigint, title: text, bio: text, doc: jsonb, tags: json}\nkey: [id]\nfields: {bio: BIO}",
    )
    .await;
    let p = "l0.copy_article";
    let row = |title: &str, bio: Option<&str>| {
        let mut after =
            json!({"id": 1, "title": title, "doc": "just text", "tags": {"a": [1, 2.50]}});
        if let Some(bio) = bio {
            after["BIO"] = json!(bio);
        }
        after
    };
    call(
        &db,
        p,
        ev(
            "c",
            json!({"id": 1}),
            Some(row("t1", Some("long text"))),
            100,
        ),
    )
    .await
    .unwrap();
    // A JSON string scalar stays a JSON string; an object stays an object.
    assert_eq!(
        db.strings(TEXT_AND_JSON).await,
        [r#"1 | long text | string | "just text" | {"a": [1, 2.5]}"#]
    );
    // An update that did not send `BIO` (listed under its event name) keeps it.
    let update = with_unchanged(
        ev("u", json!({"id": 1}), Some(row("t2", None)), 200),
        &["BIO"],
    );
    call(&db, p, update).await.unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', title, bio) from l0.article")
            .await,
        ["t2 long text"]
    );
    // A later real value replaces it.
    call(
        &db,
        p,
        ev("u", json!({"id": 1}), Some(row("t3", Some("short"))), 300),
    )
    .await
    .unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', title, bio) from l0.article")
            .await,
        ["t3 short"]
    );
    // An insert without the value: null. JSON null: SQL null.
    let insert = with_unchanged(
        ev(
            "c",
            json!({"id": 2}),
            Some(json!({"id": 2, "title": "x", "doc": null, "tags": null})),
            300,
        ),
        &["BIO"],
    );
    call(&db, p, insert).await.unwrap();
    assert_eq!(
        db.strings("select concat_ws(' ', id, bio is null, doc is null, tags is null) from l0.article where id = 2").await,
        ["2 t t t"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_upsert_keeps_unchanged_columns_and_reads_json_as_json() {
    let db = TestDb::new("sink_unchanged").await;
    install(
        &db,
        "crm.sink_note",
        "sink_upsert",
        "table: crm.note\ncolumns: {note_id: text, body: text, meta: jsonb}\nkey: [note_id]\nfields: {body: BODY}",
    )
    .await;
    let p = "crm.sink_note";
    let after = |body: Option<&str>| {
        let mut a = json!({"note_id": "N1", "meta": "a string"});
        if let Some(b) = body {
            a["BODY"] = json!(b);
        }
        a
    };
    call(
        &db,
        p,
        ev(
            "c",
            json!({"note_id": "N1"}),
            Some(after(Some("first"))),
            100,
        ),
    )
    .await
    .unwrap();
    let update = with_unchanged(
        ev("u", json!({"note_id": "N1"}), Some(after(None)), 200),
        &["BODY"],
    );
    call(&db, p, update).await.unwrap();
    let row = "select concat_ws(' ', note_id, body, jsonb_typeof(meta), meta::text) from crm.note";
    assert_eq!(db.strings(row).await, [r#"N1 first string "a string""#]);
    call(
        &db,
        p,
        ev(
            "u",
            json!({"note_id": "N1"}),
            Some(after(Some("second"))),
            300,
        ),
    )
    .await
    .unwrap();
    assert_eq!(db.strings(row).await, [r#"N1 second string "a string""#]);
}
