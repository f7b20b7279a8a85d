//! The L1 normalisation functions, table-driven, on real PostgreSQL. Garbage
//! yields null, never an error.

mod common;

use common::TestDb;

/// Runs `select <function>($1)` for each input and compares with the expected text.
async fn table(db: &TestDb, function: &str, cases: &[(&str, Option<&str>)]) {
    let client = db.client().await;
    // A bare function name is called on $1; an expression holds $1 itself.
    let sql = if function.contains("$1") {
        format!("select ({function})::text")
    } else {
        format!("select ({function}($1))::text")
    };
    let mut wrong = Vec::new();
    for (input, want) in cases {
        let got: Option<String> = client
            .query_one(&sql, &[input])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{function}({input:?}): {:?}",
                    e.as_db_error().map(|d| d.message())
                )
            })
            .get(0);
        if got.as_deref() != *want {
            wrong.push(format!("{function}({input:?}) = {got:?}, want {want:?}"));
        }
    }
    assert!(cases.len() >= 20, "{function}: at least 20 cases");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn phones_become_e164() {
    let db = TestDb::new("phone").await;
    table(
        &db,
        "pgchain.normalize_phone",
        &[
            ("010-1234-5678", Some("+821012345678")),
            ("01012345678", Some("+821012345678")),
            (" 010 1234 5678 ", Some("+821012345678")),
            ("(010) 1234-5678", Some("+821012345678")),
            ("011-123-4567", Some("+82111234567")),
            ("+82 10-1234-5678", Some("+821012345678")),
            ("+82 010 1234 5678", Some("+821012345678")),
            ("82-10-1234-5678", Some("+821012345678")),
            ("0082 10 1234 5678", Some("+821012345678")),
            ("02-123-4567", Some("+8221234567")),
            ("02-1234-5678", Some("+82212345678")),
            ("031-123-4567", Some("+82311234567")),
            ("064-712-3456", Some("+82647123456")),
            ("070-1234-5678", Some("+827012345678")),
            ("0505-123-4567", Some("+825051234567")),
            ("1588-1234", Some("+8215881234")),
            ("1644-0000", Some("+8216440000")),
            ("080-123-4567", Some("+82801234567")),
            ("+44 20 7946 0958", Some("+442079460958")),
            ("+1 (415) 555-2671", Some("+14155552671")),
            ("010-1234-5678 ext. 12", Some("+821012345678")),
            ("010-12", None),
            ("1234", None),
            ("hello", None),
            ("", None),
            ("010-1234-5678-9999", None),
            ("+", None),
            ("019-abc-defg", None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_kinds_say_which_numbers_identify_a_person() {
    let db = TestDb::new("phone_kind").await;
    table(
        &db,
        "pgchain.phone_kind",
        &[
            ("010-1234-5678", Some("mobile")),
            ("016-123-4567", Some("mobile")),
            ("+82 10 9999 0000", Some("mobile")),
            ("02-123-4567", Some("landline")),
            ("051-123-4567", Some("landline")),
            ("0505-123-4567", Some("proxy")),
            ("0507-1234-5678", Some("proxy")),
            ("1588-1234", Some("representative")),
            ("1600-1234", Some("representative")),
            ("1899-1234", Some("representative")),
            ("070-1234-5678", Some("internet")),
            ("080-123-4567", Some("toll_free")),
            ("+44 20 7946 0958", Some("international")),
            ("+1 415 555 2671", Some("international")),
            ("garbage", None),
            ("", None),
            ("000", None),
            ("02-12", None),
            ("+82 010 1234 5678", Some("mobile")),
            ("82-2-123-4567", Some("landline")),
        ],
    )
    .await;
    table(
        &db,
        "pgchain.phone_identifies_person",
        &[
            ("010-1234-5678", Some("true")),
            ("011-123-4567", Some("true")),
            ("02-123-4567", Some("true")),
            ("031-123-4567", Some("true")),
            ("070-1234-5678", Some("true")),
            ("+44 20 7946 0958", Some("true")),
            ("0505-123-4567", Some("false")),
            ("0503-123-4567", Some("false")),
            ("1588-1234", Some("false")),
            ("1577-1234", Some("false")),
            ("1666-1234", Some("false")),
            ("1800-1234", Some("false")),
            ("080-123-4567", Some("false")),
            ("080-1234-5678", Some("false")),
            ("nothing", None),
            ("", None),
            ("12", None),
            ("+82 10 1234 5678", Some("true")),
            ("82-10-1234-5678", Some("true")),
            ("0082 2 123 4567", Some("true")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emails_are_trimmed_lowered_or_rejected() {
    let db = TestDb::new("email").await;
    table(
        &db,
        "pgchain.normalize_email",
        &[
            ("minjun.kim@example.com", Some("minjun.kim@example.com")),
            ("  Minjun.Kim@Example.COM ", Some("minjun.kim@example.com")),
            ("a+tag@sub.example.co.kr", Some("a+tag@sub.example.co.kr")),
            ("o'brien@example.ie", Some("o'brien@example.ie")),
            ("first_last@ex-ample.org", Some("first_last@ex-ample.org")),
            ("x@y.io", Some("x@y.io")),
            ("USER@NAVER.COM", Some("user@naver.com")),
            ("12345@daum.net", Some("12345@daum.net")),
            ("a.b.c@d.e.f.kr", Some("a.b.c@d.e.f.kr")),
            ("\tname@example.net\n", Some("name@example.net")),
            ("plainaddress", None),
            ("@no-local.com", None),
            ("no-at.example.com", None),
            ("two@@example.com", None),
            ("a@b", None),
            ("a@b.c", None),
            ("dots..twice@example.com", None),
            (".lead@example.com", None),
            ("trail.@example.com", None),
            ("spa ce@example.com", None),
            ("a@-bad.com", None),
            ("", None),
            ("010-1234-5678", None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_trimmed_collapsed_and_composed() {
    let db = TestDb::new("name").await;
    table(
        &db,
        "pgchain.normalize_name",
        &[
            ("Kim Minjun", Some("Kim Minjun")),
            ("  Kim   Minjun  ", Some("Kim Minjun")),
            ("Kim\tMinjun", Some("Kim Minjun")),
            ("김민준", Some("김민준")),
            (" 김 민준 ", Some("김 민준")),
            // Decomposed jamo (NFD, as some systems send it) compose to NFC.
            ("\u{1100}\u{1175}\u{11B7}", Some("김")),
            ("Jose\u{0301}", Some("José")),
            ("O'Brien", Some("O'Brien")),
            ("Anne-Marie", Some("Anne-Marie")),
            ("Mr. Kim", Some("Mr. Kim")),
            ("김민준님", Some("김민준님")),
            ("", None),
            ("   ", None),
            ("\n", None),
            ("A", Some("A")),
            ("Lee  Seo  Yeon", Some("Lee Seo Yeon")),
            ("박지호 ", Some("박지호")),
            ("Ünal", Some("Ünal")),
            ("Zoë", Some("Zoë")),
            ("d'Artagnan", Some("d'Artagnan")),
        ],
    )
    .await;
    table(
        &db,
        "pgchain.normalize_name($1, true)",
        &[
            ("Mr. Kim", Some("Kim")),
            ("mrs Lee", Some("Lee")),
            ("Dr Park", Some("Park")),
            ("Ms. Choi", Some("Choi")),
            ("김민준님", Some("김민준")),
            ("김민준 님", Some("김민준")),
            ("이서연씨", Some("이서연")),
            ("박지호 고객님", Some("박지호")),
            ("Kim Minjun", Some("Kim Minjun")),
            ("Mrsmith", Some("Mrsmith")),
            ("Drake", Some("Drake")),
            ("님", None),
            ("", None),
            ("  Mr.   Kim  ", Some("Kim")),
            ("최수아", Some("최수아")),
            ("MISS Jung", Some("Jung")),
            ("씨앗", Some("씨앗")),
            ("Dr. 김", Some("김")),
            ("Kang Jiwoo 님", Some("Kang Jiwoo")),
            ("Yoon", Some("Yoon")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn birth_dates_in_common_formats() {
    let db = TestDb::new("birth").await;
    table(
        &db,
        "pgchain.normalize_birth_date",
        &[
            ("1985-03-12", Some("1985-03-12")),
            ("1985.03.12", Some("1985-03-12")),
            ("1985/03/12", Some("1985-03-12")),
            ("1985.3.12", Some("1985-03-12")),
            ("19850312", Some("1985-03-12")),
            ("850312", Some("1985-03-12")),
            ("000101", Some("2000-01-01")),
            ("991231", Some("1999-12-31")),
            ("1985년 3월 12일", Some("1985-03-12")),
            ("1985년3월12일", Some("1985-03-12")),
            (" 1985-03-12 ", Some("1985-03-12")),
            ("1985-03-12T00:00:00", Some("1985-03-12")),
            ("2000-02-29", Some("2000-02-29")),
            ("1900-01-01", Some("1900-01-01")),
            ("2023-02-30", None),
            ("1985-13-01", None),
            ("1985-00-10", None),
            ("1899-12-31", None),
            ("2999-01-01", None),
            ("12/03/1985", None),
            ("hello", None),
            ("", None),
            ("19851", None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_fold_or_use_the_building_id() {
    let db = TestDb::new("address").await;
    table(
        &db,
        "pgchain.normalize_address",
        &[
            (
                "서울특별시 강남구 테헤란로 123",
                Some("서울특별시 강남구 테헤란로 123"),
            ),
            (
                "서울특별시  강남구   테헤란로 123 ",
                Some("서울특별시 강남구 테헤란로 123"),
            ),
            (
                "서울특별시 강남구 테헤란로 123, 4층",
                Some("서울특별시 강남구 테헤란로 123 4층"),
            ),
            (
                "서울특별시 강남구 테헤란로 123 (역삼동)",
                Some("서울특별시 강남구 테헤란로 123 역삼동"),
            ),
            ("123 Main St., Apt. #4", Some("123 main st apt 4")),
            ("123 MAIN ST APT 4", Some("123 main st apt 4")),
            ("123-45 Some-Road", Some("123 45 some road")),
            ("  ", None),
            ("", None),
            ("...", None),
            (
                "부산광역시 해운대구 우동 1-2",
                Some("부산광역시 해운대구 우동 1 2"),
            ),
            ("Flat 2/3, 10 Downing St", Some("flat 2 3 10 downing st")),
            ("10\tDowning\nSt", Some("10 downing st")),
            ("Straße 5", Some("straße 5")),
            ("Rue de l'Église 3", Some("rue de l église 3")),
            ("P.O. Box 12", Some("p o box 12")),
            (
                "경기도 성남시 분당구 판교역로 235",
                Some("경기도 성남시 분당구 판교역로 235"),
            ),
            ("경기도,성남시,분당구", Some("경기도 성남시 분당구")),
            ("#1203", Some("1203")),
            ("A", Some("a")),
        ],
    )
    .await;
    let with_id = "pgchain.normalize_address('서울 강남구 테헤란로 123', $1)";
    table(
        &db,
        with_id,
        &[
            (
                "1168010100101230000000001",
                Some("bld:1168010100101230000000001"),
            ),
            (
                " 1168010100101230000000001 ",
                Some("bld:1168010100101230000000001"),
            ),
            ("", Some("서울 강남구 테헤란로 123")),
            ("   ", Some("서울 강남구 테헤란로 123")),
            ("B-1", Some("bld:B-1")),
            ("x", Some("bld:x")),
            ("0", Some("bld:0")),
            (
                "2611010200100010002000001",
                Some("bld:2611010200100010002000001"),
            ),
            ("id 7", Some("bld:id 7")),
            ("42", Some("bld:42")),
            (
                "4113510900106850000000002",
                Some("bld:4113510900106850000000002"),
            ),
            ("9", Some("bld:9")),
            ("a1", Some("bld:a1")),
            ("b2", Some("bld:b2")),
            ("c3", Some("bld:c3")),
            ("d4", Some("bld:d4")),
            ("e5", Some("bld:e5")),
            ("f6", Some("bld:f6")),
            ("g7", Some("bld:g7")),
            ("h8", Some("bld:h8")),
        ],
    )
    .await;
}
