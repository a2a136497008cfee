//! Request input: a JSON body extractor with a size limit and precise 400s, path and number
//! checks. Everything here rejects before anything is written.

use crate::error::AppError;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Largest accepted request head (the sum of header names and values). actix-web itself takes
/// up to 128 KiB; HAProxy in front refuses heads over its 16 KiB buffer first.
pub const HEADERS_LIMIT: usize = 16 * 1024;
/// Largest accepted quantity or amount: anything above is a typo or an attack.
pub const MAX_AMOUNT: i64 = 1_000_000_000;

/// A JSON body of type `T`; an empty body parses as `{}` (so optional fields take defaults).
///
/// Refused before anything runs: bodies over 16 KiB (413, before being read in full), a body
/// that is not `Content-Type: application/json` (415), anything but one JSON object, unknown
/// or duplicate keys (400 `invalid_json`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared_too_large = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .is_some_and(|length| length > BODY_LIMIT);
        let declared_json = is_json(req);
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_too_large {
                return Err(AppError::PayloadTooLarge { limit: BODY_LIMIT });
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|err| AppError::bad_request("invalid_body", err.to_string()))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(AppError::PayloadTooLarge { limit: BODY_LIMIT });
                }
                body.extend_from_slice(&chunk);
            }
            let body = body.freeze();
            let text: &[u8] = match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
                None => b"{}",
                Some(_) if !declared_json => return Err(AppError::UnsupportedMediaType),
                // serde would happily read a struct from an array (`[5]`); bodies are objects.
                Some(b'{') => &body,
                // `null` is no body at all, as an optional body's schema has it.
                Some(_) if body.trim_ascii() == b"null" => b"{}",
                Some(_) => {
                    return Err(AppError::bad_request(
                        "invalid_json",
                        "the JSON body must be an object",
                    ))
                }
            };
            // Straight into `T`, never through `serde_json::Value`: a map would keep the last of
            // two equal keys, the derived visitor refuses the duplicate.
            serde_json::from_slice(text).map(JsonBody).map_err(|err| {
                AppError::bad_request("invalid_json", format!("invalid JSON body: {err}"))
            })
        })
    }
}

/// `Content-Type: application/json` (parameters allowed) or an `application/*+json` type.
fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A text field: `1..=max_chars` characters, not blank, no control characters (NUL, newlines,
/// escapes) and no invisible format characters (zero-width, bidi overrides, line and paragraph
/// separators): anything else is a 400 with `code`.
pub fn check_text(
    code: &'static str,
    field: &str,
    value: &str,
    max_chars: usize,
) -> Result<(), AppError> {
    if value.trim().is_empty() || value.chars().count() > max_chars {
        Err(AppError::bad_request(
            code,
            format!("{field} must be 1 to {max_chars} characters"),
        ))
    } else if value.chars().any(is_control_or_invisible) || has_stray_tags(value) {
        Err(AppError::bad_request(
            code,
            format!("{field} must not contain control characters"),
        ))
    } else {
        Ok(())
    }
}

/// Unicode's control (Cc), format (Cf) and line/paragraph separator (Zl, Zp) characters: what
/// can hide text, reorder it on screen or break a log line. The tag characters (U+E0000 block)
/// are judged apart, by [`has_stray_tags`]. [`TEXT_PATTERN`] says the same to the contract's
/// readers, for the characters below U+10000.
fn is_control_or_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
        )
}

/// Whether `value` has tag characters (U+E0000 block, invisible: a known way to smuggle text)
/// outside the one place they belong: a subdivision flag, 🏴 then tag letters then the cancel
/// tag (🏴󠁧󠁢󠁳󠁣󠁴󠁿).
fn has_stray_tags(value: &str) -> bool {
    #[derive(PartialEq)]
    enum At {
        Text,
        BlackFlag,
        FlagTags,
    }
    let mut at = At::Text;
    for c in value.chars() {
        at = match (c, at) {
            ('\u{E0020}'..='\u{E007E}', At::BlackFlag | At::FlagTags) => At::FlagTags,
            ('\u{E007F}', At::FlagTags) => At::Text,
            ('\u{E0000}'..='\u{E007F}', _) => return true,
            // A flag left without its cancel tag.
            (_, At::FlagTags) => return true,
            ('\u{1F3F4}', _) => At::BlackFlag,
            _ => At::Text,
        };
    }
    at == At::FlagTags
}

/// The JSON Schema `pattern` of [`check_text`]'s rule, for the published contract: at least one
/// character that is not white space, none of the refused ones.
pub const TEXT_PATTERN: &str = "^(?=.*\\S)[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u206F\\uFEFF\\uFFF9-\\uFFFB]+$";

/// A JSON integer as JSON Schema counts them (the published contract's `integer`): `5` and
/// `5.0` alike, never `5.5` or a number outside 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer(pub i64);

impl<'de> serde::Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integer;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Integer, E> {
                Ok(Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Integer, E> {
                i64::try_from(value)
                    .map(Integer)
                    .map_err(|_| E::custom(format!("{value} is out of range")))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Integer, E> {
                // Below 2^52 a double still has a fraction bit, so `5.5` stays `5.5` and an
                // integral value is the number that was sent; above, `x.5` would already have
                // been rounded to an integer by the parser.
                if value.fract() == 0.0 && value.abs() < FLOAT_INTEGERS {
                    Ok(Integer(value as i64))
                } else {
                    Err(E::custom(format!(
                        "{value} is not an integer (or, written with a fraction, not below 2^52)"
                    )))
                }
            }
        }
        deserializer.deserialize_i64(Visitor)
    }
}

/// 2^52: the integers a JSON number written with a fraction (`5.0`) may stand for.
const FLOAT_INTEGERS: f64 = 4_503_599_627_370_496.0;

/// `deserialize_with` for plain `i64` fields: an [`Integer`].
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    <Integer as serde::Deserialize>::deserialize(deserializer).map(|integer| integer.0)
}

/// The largest id: 18 digits, as the contract's path pattern has it (ids come from sequences
/// that never get near; client-chosen user ids are held to the same rule).
pub const MAX_ID: i64 = 999_999_999_999_999_999;

/// An id from a path or body: 1 ..= [`MAX_ID`]. Anything else fails extraction (400)
/// before a handler runs, so no lock is taken and nothing is written for bad ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Integer")]
pub struct Id(pub i64);

impl TryFrom<Integer> for Id {
    type Error = String;

    fn try_from(Integer(value): Integer) -> Result<Self, String> {
        if (1..=MAX_ID).contains(&value) {
            Ok(Id(value))
        } else {
            Err(format!("ids run from 1 to {MAX_ID}, got {value}"))
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A quantity or amount: 1 ..= [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Integer")]
pub struct Amount(pub i64);

impl TryFrom<Integer> for Amount {
    type Error = String;

    fn try_from(Integer(value): Integer) -> Result<Self, String> {
        if (1..=MAX_AMOUNT).contains(&value) {
            Ok(Amount(value))
        } else {
            Err(format!("must be between 1 and {MAX_AMOUNT}, got {value}"))
        }
    }
}

/// A seat number: 1 ..= 100 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Integer")]
pub struct SeatNo(pub i32);

impl TryFrom<Integer> for SeatNo {
    type Error = String;

    fn try_from(Integer(value): Integer) -> Result<Self, String> {
        if (1..=100_000).contains(&value) {
            Ok(SeatNo(value as i32))
        } else {
            Err(format!("seat numbers run from 1 to 100000, got {value}"))
        }
    }
}

impl std::fmt::Display for SeatNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Error handlers for actix's own extractors (path, query), so they answer like ours.
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    AppError::bad_request("invalid_path", err.to_string()).into()
}

/// See [`path_error`].
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    AppError::bad_request("invalid_query", err.to_string()).into()
}

/// 400 `invalid_path` for a number in the path that is not written the one way an id is: no
/// sign, no leading zeros, no percent-encoding (`/product/+2`, `/product/02`, `/product/%32`
/// would otherwise all name product 2, and a client could not tell its requests apart).
pub fn check_path(path: &str) -> Result<(), AppError> {
    for raw in path.split('/') {
        let Some(decoded) = percent_decoded(raw) else {
            continue;
        };
        let digits = decoded.strip_prefix(['+', '-']).unwrap_or(&decoded);
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let canonical = decoded
            .parse::<i64>()
            .is_ok_and(|number| number.to_string() == decoded);
        if raw != decoded || !canonical {
            return Err(AppError::bad_request(
                "invalid_path",
                format!("ids are written in plain decimal, without sign or leading zeros: {raw:?}"),
            ));
        }
    }
    Ok(())
}

/// `segment` with `%XX` escapes decoded; `None` if an escape is malformed or not UTF-8 (the
/// router refuses those itself).
fn percent_decoded(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_string());
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = segment.get(at + 1..at + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// 431 `headers_too_large` for a request whose headers add up to more than [`HEADERS_LIMIT`].
pub fn check_headers(req: &actix_web::dev::ServiceRequest) -> Result<(), AppError> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > HEADERS_LIMIT {
        Err(AppError::HeadersTooLarge {
            limit: HEADERS_LIMIT,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_control_and_invisible_characters() {
        for bad in [
            "a\0b",
            "\u{1b}[31m",
            "a\u{202E}b",
            "\u{200B}",
            "a\u{2028}b",
            "\u{FEFF}x",
        ] {
            assert!(check_text("c", "name", bad, 200).is_err(), "{bad:?}");
        }
        for bad in [
            "a\u{E0041}b",
            "\u{1F3F4}\u{E0067}\u{E0062}",
            "\u{E007F}",
            "a\u{1D173}",
        ] {
            assert!(check_text("c", "name", bad, 200).is_err(), "{bad:?}");
        }
        let scotland = "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}";
        for good in [
            "plain",
            "Crème brûlée",
            "日本語",
            "emoji 🎉",
            "a-b c",
            scotland,
            "🏴 x",
        ] {
            assert!(check_text("c", "name", good, 200).is_ok(), "{good:?}");
        }
        assert!(check_text("c", "name", "   ", 200).is_err());
        assert!(check_text("c", "name", &"x".repeat(201), 200).is_err());
    }

    #[test]
    fn paths_name_ids_one_way_only() {
        for good in [
            "/product/2/deduct",
            "/product/9223372036854775807",
            "/health/live",
            "/",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        // Not numbers: the extractors answer for them.
        for other in [
            "/product/abc",
            "/product/2x",
            "/product/%ZZ",
            "/product/+",
            "/product/-",
        ] {
            assert!(check_path(other).is_ok(), "{other}");
        }
        for bad in [
            "/product/02",
            "/product/+2",
            "/product/-0",
            "/product/00",
            "/product/%32",
            "/concerts/1/seats/007/reserve",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
