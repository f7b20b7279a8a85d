//! The encodings CDC tools give typed values on the wire, turned into the
//! text PostgreSQL casts exactly: decimals as digits (never through a
//! float), days and epoch counts as ISO dates, times and timestamps.
//!
//! Kafka Connect's `Decimal` (and Avro's `decimal`) is the unscaled value
//! as big-endian two's complement bytes with the scale beside it; Debezium's
//! `VariableScaleDecimal` carries its scale in the value. Dates are days
//! since 1970-01-01, times counts since midnight, timestamps counts since
//! the epoch, all without a zone (the source's local wall-clock value).

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

/// The exact decimal text of an unscaled big-endian two's complement
/// integer and its scale (`[0x30, 0x39]`, 2 → `123.45`; a negative scale
/// multiplies by a power of ten).
pub fn decimal(unscaled: &[u8], scale: i32) -> String {
    let negative = unscaled.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = unscaled.to_vec();
    if negative {
        // Two's complement: invert and add one.
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = decimal_digits(&magnitude);
    if scale < 0 {
        if digits != "0" {
            digits.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        }
    } else if scale > 0 {
        let scale = scale as usize;
        if digits.len() <= scale {
            let pad = scale + 1 - digits.len();
            digits.insert_str(0, &"0".repeat(pad));
        }
        digits.insert(digits.len() - scale, '.');
    }
    if negative && digits.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        digits.insert(0, '-');
    }
    digits
}

/// The shortest big-endian two's complement bytes of `v`: what Connect's
/// `Decimal` writes (Java's `BigInteger.toByteArray`), and what [`decimal`]
/// reads back.
pub fn twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// The base-10 digits of an unsigned big-endian integer.
fn decimal_digits(bytes: &[u8]) -> String {
    // Repeated division by 10^9 of base-2^32 limbs.
    let mut limbs: Vec<u32> = Vec::with_capacity(bytes.len() / 4 + 1);
    let pad = (4 - bytes.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(0u8, pad)
        .chain(bytes.iter().copied())
        .collect();
    for chunk in padded.chunks(4) {
        limbs.push(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let mut parts: Vec<u32> = Vec::new();
    while limbs.iter().any(|l| *l != 0) {
        let mut rem: u64 = 0;
        for l in limbs.iter_mut() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        parts.push(rem as u32);
        while limbs.first() == Some(&0) && limbs.len() > 1 {
            limbs.remove(0);
        }
    }
    match parts.split_last() {
        None => "0".to_string(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for p in rest.iter().rev() {
                s.push_str(&format!("{p:09}"));
            }
            s
        }
    }
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn date(days: i64) -> Option<String> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let d = epoch.checked_add_signed(chrono::TimeDelta::try_days(days)?)?;
    if (0..=9999).contains(&d.year()) {
        // Written directly: chrono's `format` parses its pattern every call.
        return Some(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()));
    }
    Some(d.format("%Y-%m-%d").to_string())
}

/// The unit of a count since midnight or since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    /// The count in whole microseconds (nanoseconds truncated toward the
    /// earlier instant: PostgreSQL keeps microseconds).
    fn micros(self, count: i64) -> i64 {
        match self {
            Unit::Millis => count.saturating_mul(1000),
            Unit::Micros => count,
            Unit::Nanos => count.div_euclid(1000),
        }
    }
}

/// `HH:MM:SS[.ffffff]` of a count since midnight; 24:00:00 (PostgreSQL's
/// end of day) stays 24:00:00.
pub fn time(count: i64, unit: Unit) -> Option<String> {
    let micros = unit.micros(count);
    if !(0..=86_400_000_000).contains(&micros) {
        return None;
    }
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    Some(if frac == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{frac:06}")
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, without a zone, of a count since the
/// epoch.
pub fn timestamp(count: i64, unit: Unit) -> Option<String> {
    let t = DateTime::from_timestamp_micros(unit.micros(count))?.naive_utc();
    let frac = t.and_utc().timestamp_subsec_micros();
    if (0..=9999).contains(&t.year()) {
        // Written directly: chrono's `format` parses its pattern every call.
        let (y, mo, d) = (t.year(), t.month(), t.day());
        let (h, mi, sec) = (t.hour(), t.minute(), t.second());
        return Some(if frac == 0 {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}")
        } else {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{frac:06}")
        });
    }
    Some(if frac == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    })
}

/// `\x…`: bytes as the hex text PostgreSQL casts to `bytea`.
pub fn bytea(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_from_the_connect_documentation_and_edges() {
        // Debezium's PostgreSQL docs: numeric(…,2) 1.00 is "AGQ=" = 0x0064.
        assert_eq!(decimal(&[0x00, 0x64], 2), "1.00");
        assert_eq!(decimal(&[0x30, 0x39], 2), "123.45");
        assert_eq!(decimal(&[0x01, 0xe2, 0x40], 2), "1234.56");
        assert_eq!(decimal(&[0xff], 0), "-1");
        assert_eq!(decimal(&[0xff, 0x9c], 2), "-1.00");
        assert_eq!(decimal(&[0xff, 0xff, 0xff, 0xfb], 3), "-0.005");
        assert_eq!(decimal(&[0x00], 4), "0.0000");
        assert_eq!(decimal(&[], 0), "0");
        assert_eq!(decimal(&[0x05], -3), "5000");
        assert_eq!(decimal(&[0x80], 0), "-128");
        // 2^127 - 1, 38 digits.
        let mut max = vec![0x7f];
        max.extend([0xff; 15]);
        assert_eq!(decimal(&max, 0), i128::MAX.to_string());
        let mut min = vec![0x80];
        min.extend([0x00; 15]);
        assert_eq!(decimal(&min, 0), i128::MIN.to_string());
    }

    #[test]
    fn dates_times_and_timestamps() {
        assert_eq!(date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(date(19_000).as_deref(), Some("2022-01-08"));
        assert_eq!(date(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(time(0, Unit::Micros).as_deref(), Some("00:00:00"));
        assert_eq!(
            time(45_296_789_012, Unit::Micros).as_deref(),
            Some("12:34:56.789012")
        );
        assert_eq!(
            time(45_296_789, Unit::Millis).as_deref(),
            Some("12:34:56.789000")
        );
        assert_eq!(
            time(45_296_789_012_345, Unit::Nanos).as_deref(),
            Some("12:34:56.789012")
        );
        assert_eq!(
            time(86_400_000_000, Unit::Micros).as_deref(),
            Some("24:00:00")
        );
        assert_eq!(time(-1, Unit::Micros), None);
        assert_eq!(
            timestamp(1_529_507_596_945_104, Unit::Micros).as_deref(),
            Some("2018-06-20T15:13:16.945104")
        );
        assert_eq!(
            timestamp(1_529_507_596_945, Unit::Millis).as_deref(),
            Some("2018-06-20T15:13:16.945000")
        );
        assert_eq!(
            timestamp(-1, Unit::Micros).as_deref(),
            Some("1969-12-31T23:59:59.999999")
        );
        assert_eq!(
            timestamp(-1, Unit::Nanos).as_deref(),
            Some("1969-12-31T23:59:59.999999")
        );
        assert_eq!(
            timestamp(0, Unit::Millis).as_deref(),
            Some("1970-01-01T00:00:00")
        );
        assert_eq!(bytea(&[0xde, 0xad, 0x00]), "\\xdead00");
    }

    /// `v` with `scale` digits after the point, by integer arithmetic.
    fn expected(v: i128, scale: u32) -> String {
        let digits = v.unsigned_abs().to_string();
        let s = scale as usize;
        let padded = if digits.len() <= s {
            format!("{}{digits}", "0".repeat(s + 1 - digits.len()))
        } else {
            digits
        };
        let text = if s == 0 {
            padded
        } else {
            format!(
                "{}.{}",
                &padded[..padded.len() - s],
                &padded[padded.len() - s..]
            )
        };
        if v < 0 { format!("-{text}") } else { text }
    }

    proptest::proptest! {
        #[test]
        fn any_decimal_of_up_to_38_digits_comes_out_exact(
            v in -(10i128.pow(38) - 1)..10i128.pow(38),
            scale in 0u32..=18,
        ) {
            proptest::prop_assert_eq!(decimal(&twos_complement(v), scale as i32), expected(v, scale));
        }

        #[test]
        fn any_timestamp_comes_back_to_the_same_microsecond(
            micros in -62_135_596_800_000_000i64..253_402_300_799_999_999,
        ) {
            let text = timestamp(micros, Unit::Micros).unwrap();
            let fmt = if text.contains('.') { "%Y-%m-%dT%H:%M:%S%.6f" } else { "%Y-%m-%dT%H:%M:%S" };
            let back = chrono::NaiveDateTime::parse_from_str(&text, fmt).unwrap();
            proptest::prop_assert_eq!(back.and_utc().timestamp_micros(), micros);
            // Nanoseconds within the microsecond are dropped.
            if let Some(nanos) = micros.checked_mul(1000).and_then(|n| n.checked_add(999)) {
                let t = timestamp(nanos, Unit::Nanos);
                proptest::prop_assert_eq!(t.as_deref(), Some(text.as_str()));
            }
        }

        #[test]
        fn dates_and_timestamps_read_as_chrono_writes_them(
            micros in proptest::num::i64::ANY,
            days in -3_000_000i64..3_000_000,
        ) {
            if let Some(t) = DateTime::from_timestamp_micros(micros) {
                let t = t.naive_utc();
                let fmt = if t.and_utc().timestamp_subsec_micros() == 0 { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%dT%H:%M:%S%.6f" };
                proptest::prop_assert_eq!(timestamp(micros, Unit::Micros), Some(t.format(fmt).to_string()));
            }
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
            let d = epoch.checked_add_signed(chrono::TimeDelta::try_days(days).unwrap());
            proptest::prop_assert_eq!(date(days), d.map(|d| d.format("%Y-%m-%d").to_string()));
        }

        #[test]
        fn any_time_of_day_comes_back_to_the_same_microsecond(micros in 0i64..86_400_000_000) {
            let text = time(micros, Unit::Micros).unwrap();
            let fmt = if text.contains('.') { "%H:%M:%S%.6f" } else { "%H:%M:%S" };
            let back = chrono::NaiveTime::parse_from_str(&text, fmt).unwrap();
            let since = back.signed_duration_since(chrono::NaiveTime::MIN);
            proptest::prop_assert_eq!(since.num_microseconds(), Some(micros));
        }
    }
}
