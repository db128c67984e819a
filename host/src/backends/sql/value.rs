//! Between `sql.value` and PostgreSQL's binary wire format: parameters in ([`Param`]),
//! columns out ([`ColumnKind`], [`decode`]).
//!
//! sqlx sends every parameter and asks for every column in the binary format, so a value's
//! PostgreSQL type must be known on both sides: a parameter's type is its variant's (sent in
//! the `Parse` message, so PostgreSQL checks it against the statement), a column's type is
//! the one PostgreSQL describes for it. Where sqlx's own codec for a type matches the WIT
//! meaning exactly it is used; `numeric`'s special values, `timestamptz` and `date` (whose
//! infinities sqlx's chrono types cannot hold) and `json`/`jsonb` (text, unparsed) are coded
//! here.

use std::str::FromStr;

use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgTypeKind, PgValueRef, Postgres};
use sqlx::types::{BigDecimal, Uuid};
use sqlx::{Decode, Type, TypeInfo as _, ValueRef as _};

use crate::bindings::polyhost::platform::sql::Value;
use crate::error::HostError;

/// Built-in type OIDs, from PostgreSQL's `pg_type.dat` (stable across versions).
mod oid {
    pub const UNSPECIFIED: u32 = 0;
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BOOL_ARRAY: u32 = 1000;
    pub const NAME_ARRAY: u32 = 1003;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const VOID: u32 = 2278;
    pub const UUID: u32 = 2950;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB: u32 = 3802;
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01), which binary timestamps
/// count from.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The `sign` word of a binary `numeric` for its special values.
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// A `numeric` parameter: a finite decimal, or one of PostgreSQL's special values.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Numeric {
    Finite(BigDecimal),
    Special(u16),
}

/// One parameter, checked and ready to encode: the WIT value with its text forms (uuid,
/// numeric) parsed and its times moved to PostgreSQL's epoch, so a malformed one is refused
/// with its position before the statement is sent.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Null,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Numeric(Numeric),
    Text(String),
    Bytes(Vec<u8>),
    Json(String),
    Uuid(Uuid),
    /// Microseconds since 2000-01-01 UTC (`i64::MAX`/`MIN` are `±infinity`).
    Timestamptz(i64),
    /// Days since 2000-01-01 (`i32::MAX`/`MIN` are `±infinity`).
    Date(i32),
    BoolArray(Vec<bool>),
    Int32Array(Vec<i32>),
    Int64Array(Vec<i64>),
    Float64Array(Vec<f64>),
    TextArray(Vec<String>),
    UuidArray(Vec<Uuid>),
}

impl Param {
    /// Checks parameter `$n` (1-based, for the message).
    pub(super) fn from_value(value: Value, n: usize) -> Result<Param, HostError> {
        let uuid = |text: &str| {
            Uuid::parse_str(text).map_err(|e| {
                HostError::invalid(format!("parameter ${n}: `{text}` is not a uuid: {e}"))
            })
        };
        Ok(match value {
            Value::Null => Param::Null,
            Value::Boolean(v) => Param::Bool(v),
            Value::Int16(v) => Param::Int16(v),
            Value::Int32(v) => Param::Int32(v),
            Value::Int64(v) => Param::Int64(v),
            Value::Float32(v) => Param::Float32(v),
            Value::Float64(v) => Param::Float64(v),
            Value::Numeric(text) => Param::Numeric(parse_numeric(&text).ok_or_else(|| {
                HostError::invalid(format!("parameter ${n}: `{text}` is not a numeric"))
            })?),
            Value::Text(v) => Param::Text(v),
            Value::Bytes(v) => Param::Bytes(v),
            Value::Json(v) => Param::Json(v),
            Value::Uuid(text) => Param::Uuid(uuid(&text)?),
            Value::Timestamptz(micros) => {
                Param::Timestamptz(unix_to_pg_micros(micros).ok_or_else(|| {
                    HostError::invalid(format!(
                        "parameter ${n}: {micros} µs since 1970 is outside timestamptz's range"
                    ))
                })?)
            }
            Value::Date(days) => Param::Date(unix_to_pg_days(days).ok_or_else(|| {
                HostError::invalid(format!(
                    "parameter ${n}: {days} days since 1970 is outside date's range"
                ))
            })?),
            Value::BooleanArray(v) => Param::BoolArray(v),
            Value::Int32Array(v) => Param::Int32Array(v),
            Value::Int64Array(v) => Param::Int64Array(v),
            Value::Float64Array(v) => Param::Float64Array(v),
            Value::TextArray(v) => Param::TextArray(v),
            Value::UuidArray(v) => {
                Param::UuidArray(v.iter().map(|text| uuid(text)).collect::<Result<_, _>>()?)
            }
        })
    }

    /// The OID sent for this parameter in `Parse`. `NULL`'s is left unspecified so that
    /// PostgreSQL infers it from the statement, as it would for a literal `NULL`.
    pub(super) fn oid(&self) -> u32 {
        match self {
            Param::Null => oid::UNSPECIFIED,
            Param::Bool(_) => oid::BOOL,
            Param::Int16(_) => oid::INT2,
            Param::Int32(_) => oid::INT4,
            Param::Int64(_) => oid::INT8,
            Param::Float32(_) => oid::FLOAT4,
            Param::Float64(_) => oid::FLOAT8,
            Param::Numeric(_) => oid::NUMERIC,
            Param::Text(_) => oid::TEXT,
            Param::Bytes(_) => oid::BYTEA,
            Param::Json(_) => oid::JSONB,
            Param::Uuid(_) => oid::UUID,
            Param::Timestamptz(_) => oid::TIMESTAMPTZ,
            Param::Date(_) => oid::DATE,
            Param::BoolArray(_) => oid::BOOL_ARRAY,
            Param::Int32Array(_) => oid::INT4_ARRAY,
            Param::Int64Array(_) => oid::INT8_ARRAY,
            Param::Float64Array(_) => oid::FLOAT8_ARRAY,
            Param::TextArray(_) => oid::TEXT_ARRAY,
            Param::UuidArray(_) => oid::UUID_ARRAY,
        }
    }

    /// The type sent for this parameter in `Parse`.
    pub(super) fn type_info(&self) -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(self.oid()))
    }
}

impl Type<Postgres> for Param {
    /// Never used: [`Encode::produces`] names each parameter's own type.
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(oid::UNSPECIFIED))
    }
}

impl Encode<'_, Postgres> for Param {
    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.type_info())
    }

    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Param::Null => return Ok(IsNull::Yes),
            Param::Bool(v) => return v.encode_by_ref(buf),
            Param::Int16(v) => return v.encode_by_ref(buf),
            Param::Int32(v) => return v.encode_by_ref(buf),
            Param::Int64(v) => return v.encode_by_ref(buf),
            Param::Float32(v) => return v.encode_by_ref(buf),
            Param::Float64(v) => return v.encode_by_ref(buf),
            Param::Numeric(Numeric::Finite(v)) => return v.encode_by_ref(buf),
            Param::Numeric(Numeric::Special(sign)) => {
                // ndigits, weight, sign, dscale: no digits, only the sign word.
                buf.extend_from_slice(&[0, 0, 0, 0]);
                buf.extend_from_slice(&sign.to_be_bytes());
                buf.extend_from_slice(&[0, 0]);
            }
            Param::Text(v) => return v.encode_by_ref(buf),
            Param::Bytes(v) => return v.encode_by_ref(buf),
            Param::Json(text) => {
                // Binary jsonb is a format version (1) and the JSON text; PostgreSQL parses
                // and checks the text itself.
                buf.push(1);
                buf.extend_from_slice(text.as_bytes());
            }
            Param::Uuid(v) => return v.encode_by_ref(buf),
            Param::Timestamptz(pg_micros) => buf.extend_from_slice(&pg_micros.to_be_bytes()),
            Param::Date(pg_days) => buf.extend_from_slice(&pg_days.to_be_bytes()),
            Param::BoolArray(v) => return v.encode_by_ref(buf),
            Param::Int32Array(v) => return v.encode_by_ref(buf),
            Param::Int64Array(v) => return v.encode_by_ref(buf),
            Param::Float64Array(v) => return v.encode_by_ref(buf),
            Param::TextArray(v) => return v.encode_by_ref(buf),
            Param::UuidArray(v) => return v.encode_by_ref(buf),
        }
        Ok(IsNull::No)
    }
}

/// How a result column's values become `sql.value`s, chosen from the column's type before
/// the statement runs, so a column no variant can carry is refused before anything happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnKind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Numeric,
    /// `text`, `varchar`, `char(n)`, `"char"`, `name`, `citext`, an enum: their binary
    /// form is their text.
    Text,
    Bytes,
    Json,
    Jsonb,
    Uuid,
    /// `timestamptz`, and `timestamp` read as UTC (both are microseconds on the wire).
    Timestamp,
    Date,
    /// A function returning `void`: always `null`.
    Void,
    BoolArray,
    /// `smallint[]`, widened to `int32-array`.
    Int16Array,
    Int32Array,
    Int64Array,
    /// `real[]`, widened to `float64-array`.
    Float32Array,
    Float64Array,
    TextArray,
    UuidArray,
}

impl ColumnKind {
    /// The kind for a column of type `ty`, or `None` when no `sql.value` carries it.
    pub(super) fn of(ty: &PgTypeInfo) -> Option<ColumnKind> {
        match ty.kind() {
            PgTypeKind::Enum(_) => return Some(ColumnKind::Text),
            PgTypeKind::Domain(base) => return ColumnKind::of(base),
            _ => {}
        }
        if ty.name().eq_ignore_ascii_case("citext") {
            return Some(ColumnKind::Text);
        }
        Some(match ty.oid()?.0 {
            oid::BOOL => ColumnKind::Bool,
            oid::INT2 => ColumnKind::Int16,
            oid::INT4 => ColumnKind::Int32,
            oid::INT8 => ColumnKind::Int64,
            oid::FLOAT4 => ColumnKind::Float32,
            oid::FLOAT8 => ColumnKind::Float64,
            oid::NUMERIC => ColumnKind::Numeric,
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::CHAR | oid::NAME | oid::UNKNOWN => {
                ColumnKind::Text
            }
            oid::BYTEA => ColumnKind::Bytes,
            oid::JSON => ColumnKind::Json,
            oid::JSONB => ColumnKind::Jsonb,
            oid::UUID => ColumnKind::Uuid,
            oid::TIMESTAMPTZ | oid::TIMESTAMP => ColumnKind::Timestamp,
            oid::DATE => ColumnKind::Date,
            oid::VOID => ColumnKind::Void,
            oid::BOOL_ARRAY => ColumnKind::BoolArray,
            oid::INT2_ARRAY => ColumnKind::Int16Array,
            oid::INT4_ARRAY => ColumnKind::Int32Array,
            oid::INT8_ARRAY => ColumnKind::Int64Array,
            oid::FLOAT4_ARRAY => ColumnKind::Float32Array,
            oid::FLOAT8_ARRAY => ColumnKind::Float64Array,
            oid::TEXT_ARRAY | oid::VARCHAR_ARRAY | oid::BPCHAR_ARRAY | oid::NAME_ARRAY => {
                ColumnKind::TextArray
            }
            oid::UUID_ARRAY => ColumnKind::UuidArray,
            _ => return None,
        })
    }
}

/// Decodes one column value of kind `kind`.
pub(super) fn decode(kind: ColumnKind, value: PgValueRef<'_>) -> Result<Value, BoxDynError> {
    if value.is_null() || kind == ColumnKind::Void {
        return Ok(Value::Null);
    }
    Ok(match kind {
        ColumnKind::Void => Value::Null,
        ColumnKind::Bool => Value::Boolean(Decode::<Postgres>::decode(value)?),
        ColumnKind::Int16 => Value::Int16(Decode::<Postgres>::decode(value)?),
        ColumnKind::Int32 => Value::Int32(Decode::<Postgres>::decode(value)?),
        ColumnKind::Int64 => Value::Int64(Decode::<Postgres>::decode(value)?),
        ColumnKind::Float32 => Value::Float32(Decode::<Postgres>::decode(value)?),
        ColumnKind::Float64 => Value::Float64(Decode::<Postgres>::decode(value)?),
        ColumnKind::Numeric => Value::Numeric(numeric_text(value)?),
        ColumnKind::Text => Value::Text(value.as_str()?.to_owned()),
        ColumnKind::Bytes => Value::Bytes(Decode::<Postgres>::decode(value)?),
        ColumnKind::Json => Value::Json(value.as_str()?.to_owned()),
        ColumnKind::Jsonb => match value.as_bytes()? {
            [1, text @ ..] => Value::Json(std::str::from_utf8(text)?.to_owned()),
            _ => return Err("jsonb in an unknown binary format version".into()),
        },
        ColumnKind::Uuid => Value::Uuid(Uuid::decode(value)?.hyphenated().to_string()),
        ColumnKind::Timestamp => {
            let pg = i64::from_be_bytes(value.as_bytes()?.try_into()?);
            Value::Timestamptz(
                pg_to_unix_micros(pg).ok_or("timestamp beyond the range of i64 µs since 1970")?,
            )
        }
        ColumnKind::Date => {
            let pg = i32::from_be_bytes(value.as_bytes()?.try_into()?);
            Value::Date(pg_to_unix_days(pg).ok_or("date beyond the range of i32 days since 1970")?)
        }
        ColumnKind::BoolArray => Value::BooleanArray(no_nulls(Decode::<Postgres>::decode(value)?)?),
        ColumnKind::Int16Array => {
            let v: Vec<i16> = no_nulls(Decode::<Postgres>::decode(value)?)?;
            Value::Int32Array(v.into_iter().map(i32::from).collect())
        }
        ColumnKind::Int32Array => Value::Int32Array(no_nulls(Decode::<Postgres>::decode(value)?)?),
        ColumnKind::Int64Array => Value::Int64Array(no_nulls(Decode::<Postgres>::decode(value)?)?),
        ColumnKind::Float32Array => {
            let v: Vec<f32> = no_nulls(Decode::<Postgres>::decode(value)?)?;
            Value::Float64Array(v.into_iter().map(f64::from).collect())
        }
        ColumnKind::Float64Array => {
            Value::Float64Array(no_nulls(Decode::<Postgres>::decode(value)?)?)
        }
        ColumnKind::TextArray => Value::TextArray(no_nulls(Decode::<Postgres>::decode(value)?)?),
        ColumnKind::UuidArray => {
            let v: Vec<Uuid> = no_nulls(Decode::<Postgres>::decode(value)?)?;
            Value::UuidArray(v.iter().map(|u| u.hyphenated().to_string()).collect())
        }
    })
}

/// An array's elements, or an error if one is `NULL`: a WIT list has no hole for it.
fn no_nulls<T>(elements: Vec<Option<T>>) -> Result<Vec<T>, BoxDynError> {
    elements
        .into_iter()
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| "an array element is NULL, which a list value cannot hold".into())
}

/// A `numeric`'s exact text, with as many fraction digits as PostgreSQL's display scale
/// (`19.90` stays `19.90`), and `NaN`/`Infinity`/`-Infinity` as PostgreSQL writes them.
fn numeric_text(value: PgValueRef<'_>) -> Result<String, BoxDynError> {
    let bytes = value.as_bytes()?;
    let [_, _, _, _, s0, s1, d0, d1, ..] = *bytes else {
        return Err("numeric shorter than its header".into());
    };
    match u16::from_be_bytes([s0, s1]) {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    let dscale = u16::from_be_bytes([d0, d1]);
    // sqlx's decoding keeps every base-10000 digit sent, so its scale may be larger (or,
    // after trailing zero groups are trimmed, smaller) than the display scale; both
    // differences are zeros, so rescaling loses nothing.
    let decimal = BigDecimal::decode(value)?.with_scale(i64::from(dscale));
    Ok(decimal.to_plain_string())
}

/// The parameter form of a `numeric` text: a decimal (as PostgreSQL's own input accepts,
/// exponent included) or one of the special values.
fn parse_numeric(text: &str) -> Option<Numeric> {
    let trimmed = text.trim();
    let special = match trimmed.to_ascii_lowercase().as_str() {
        "nan" => Some(NUMERIC_NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(NUMERIC_PINF),
        "-infinity" | "-inf" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        return Some(Numeric::Special(sign));
    }
    BigDecimal::from_str(trimmed).ok().map(Numeric::Finite)
}

/// `timestamptz` parameter: µs since 1970 → µs since 2000, keeping `±infinity`.
pub(super) fn unix_to_pg_micros(micros: i64) -> Option<i64> {
    match micros {
        i64::MAX | i64::MIN => Some(micros),
        _ => micros.checked_sub(PG_EPOCH_MICROS),
    }
}

/// `timestamptz` column: µs since 2000 → µs since 1970, keeping `±infinity`.
pub(super) fn pg_to_unix_micros(pg: i64) -> Option<i64> {
    match pg {
        i64::MAX | i64::MIN => Some(pg),
        _ => pg.checked_add(PG_EPOCH_MICROS),
    }
}

/// `date` parameter: days since 1970 → days since 2000, keeping `±infinity`.
pub(super) fn unix_to_pg_days(days: i32) -> Option<i32> {
    match days {
        i32::MAX | i32::MIN => Some(days),
        _ => days.checked_sub(PG_EPOCH_DAYS),
    }
}

/// `date` column: days since 2000 → days since 1970, keeping `±infinity`.
pub(super) fn pg_to_unix_days(pg: i32) -> Option<i32> {
    match pg {
        i32::MAX | i32::MIN => Some(pg),
        _ => pg.checked_add(PG_EPOCH_DAYS),
    }
}

/// The bytes a value takes: its payload (text, bytes, array elements), plus a fixed 16 for
/// the value itself. What [`crate::budget`] counts, for parameters and for results alike.
pub(super) fn size(value: &Value) -> usize {
    const FIXED: usize = 16;
    FIXED
        + match value {
            Value::Null
            | Value::Boolean(_)
            | Value::Int16(_)
            | Value::Int32(_)
            | Value::Int64(_)
            | Value::Float32(_)
            | Value::Float64(_)
            | Value::Timestamptz(_)
            | Value::Date(_) => 0,
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Uuid(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::BooleanArray(a) => a.len(),
            Value::Int32Array(a) => a.len() * 4,
            Value::Int64Array(a) => a.len() * 8,
            Value::Float64Array(a) => a.len() * 8,
            Value::TextArray(a) | Value::UuidArray(a) => {
                a.iter().map(|s| s.len() + FIXED).sum::<usize>()
            }
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn epochs_match_the_calendar() {
        // 2000-01-01T00:00:00Z is 946684800 s after the Unix epoch, and 10957 days.
        assert_eq!(unix_to_pg_micros(946_684_800_000_000), Some(0));
        assert_eq!(pg_to_unix_micros(0), Some(946_684_800_000_000));
        assert_eq!(unix_to_pg_days(10_957), Some(0));
        assert_eq!(pg_to_unix_days(-10_957), Some(0));
        for micros in [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000] {
            assert_eq!(
                unix_to_pg_micros(micros).and_then(pg_to_unix_micros),
                Some(micros)
            );
        }
    }

    #[test]
    fn infinities_survive_both_ways() {
        for v in [i64::MAX, i64::MIN] {
            assert_eq!(unix_to_pg_micros(v), Some(v));
            assert_eq!(pg_to_unix_micros(v), Some(v));
        }
        for v in [i32::MAX, i32::MIN] {
            assert_eq!(unix_to_pg_days(v), Some(v));
            assert_eq!(pg_to_unix_days(v), Some(v));
        }
        // Just short of the sentinels, the shift overflows instead of aliasing them.
        assert_eq!(unix_to_pg_micros(i64::MIN + 1), None);
        assert_eq!(pg_to_unix_micros(i64::MAX - 1), None);
    }

    #[test]
    fn numeric_text_is_parsed_exactly() {
        assert_eq!(
            parse_numeric("19.90"),
            Some(Numeric::Finite(BigDecimal::from_str("19.90").unwrap()))
        );
        let big = "123456789012345678901234567890.123456789012345678901234567890";
        match parse_numeric(big) {
            Some(Numeric::Finite(d)) => assert_eq!(d.to_plain_string(), big),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_numeric("NaN"), Some(Numeric::Special(NUMERIC_NAN)));
        assert_eq!(
            parse_numeric("-Infinity"),
            Some(Numeric::Special(NUMERIC_NINF))
        );
        assert_eq!(
            parse_numeric(" infinity "),
            Some(Numeric::Special(NUMERIC_PINF))
        );
        assert_eq!(
            parse_numeric("1e3").map(|n| n != Numeric::Special(0)),
            Some(true)
        );
        assert_eq!(parse_numeric("12,5"), None);
        assert_eq!(parse_numeric(""), None);
    }

    #[test]
    fn malformed_parameters_are_refused_with_their_position() {
        let err = Param::from_value(Value::Uuid("not-a-uuid".into()), 3).unwrap_err();
        assert!(
            matches!(&err, HostError { kind: Kind::Invalid, message: m, .. } if m.contains("$3")),
            "{err}"
        );
        let err = Param::from_value(
            Value::UuidArray(vec![Uuid::nil().to_string(), "x".into()]),
            1,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            HostError {
                kind: Kind::Invalid,
                ..
            }
        ));
        let err = Param::from_value(Value::Numeric("twelve".into()), 2).unwrap_err();
        assert!(matches!(
            err,
            HostError {
                kind: Kind::Invalid,
                ..
            }
        ));
        assert_eq!(
            Param::from_value(
                Value::Uuid("67E55044-10B1-426F-9247-BB680E5FE0C8".into()),
                1
            )
            .unwrap(),
            Param::Uuid(Uuid::from_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap())
        );
    }

    #[test]
    fn null_leaves_its_type_to_postgres() {
        assert_eq!(Param::Null.oid(), 0);
        assert_eq!(Param::Json("{}".into()).oid(), oid::JSONB);
        assert_eq!(Param::TextArray(vec![]).oid(), oid::TEXT_ARRAY);
    }

    #[test]
    fn special_numerics_encode_as_a_bare_sign_word() {
        let mut buf = PgArgumentBuffer::default();
        let null = Param::Numeric(Numeric::Special(NUMERIC_NAN))
            .encode_by_ref(&mut buf)
            .unwrap();
        assert!(matches!(null, IsNull::No));
        assert_eq!(&buf[..], &[0, 0, 0, 0, 0xC0, 0, 0, 0]);
    }
}
