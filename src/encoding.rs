//! Byte ↔ text encodings: lowercase hex (digests, ids, tokens, cache file names), standard
//! base64 (the `base64` crate; decoding lenient about padding, for credentials others wrote)
//! and RFC 3339 UTC timestamps (the `time` crate). Pure functions, the ground floor.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Standard alphabet; padding optional and trailing bits ignored: `Basic` headers and
/// Docker's `config.json` `auth` fields come from many writers.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of a hex string (either case); `None` for an odd length or a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign (`"+1"`).
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64, padded or not; `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    LENIENT.decode(text).ok()
}

/// `t` as an RFC 3339 UTC timestamp to the second (`2023-11-14T22:13:20Z`), as GitLab writes
/// `CI_JOB_STARTED_AT` and the distribution spec's token `issued_at`. Before 1970: the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// Parses an RFC 3339 timestamp (any offset, fractions kept); `None` when it is not one or
/// lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(unhex("000fa5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(unhex("000FA5FF"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None, "from_str_radix's sign is not a digit");
        assert_eq!(unhex(""), Some(vec![]));
    }

    #[test]
    fn base64_standard_and_lenient() {
        assert_eq!(base64_encode(b"ab"), "YWI=");
        // Padded as Subresource Integrity (`include: integrity`) writes digests (RFC 4648 §10).
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
        assert_eq!(base64_encode(b"user:pa:ss"), "dXNlcjpwYTpzcw==");
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWI"), Some(b"ab".to_vec()), "unpadded, as some writers send it");
        assert_eq!(base64_decode("YW!="), None);
        assert_eq!(base64_decode(""), Some(vec![]));
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = |secs| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(rfc3339(t(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
        for secs in [0u64, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t(secs))), Some(t(secs)));
        }
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(t(1_700_000_000)));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
