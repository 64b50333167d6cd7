//! Digest parsing (`registry::names::Digest`): accepted exactly when the algorithm is
//! sha256/sha512 with lowercase hex of the right length; never panics; round-trips.

#![no_main]

use glci::registry::names::{Algorithm, Digest, NameError, Reference};
use libfuzzer_sys::fuzz_target;

/// The spec's rule for the digests glci implements, written independently of the parser.
fn expected(s: &str) -> Option<Algorithm> {
    let (algo, hex) = s.split_once(':')?;
    let (algorithm, len) = match algo {
        "sha256" => (Algorithm::Sha256, 64),
        "sha512" => (Algorithm::Sha512, 128),
        _ => return None,
    };
    let lower_hex = hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    (hex.len() == len && lower_hex).then_some(algorithm)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let parsed = s.parse::<Digest>();
    match (&parsed, expected(s)) {
        (Ok(d), Some(algorithm)) => {
            assert_eq!(d.algorithm(), algorithm);
            assert_eq!(d.hex().len(), algorithm.hex_len());
            assert_eq!(d.to_string(), s);
            assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
        }
        (Err(NameError::Digest(e) | NameError::UnsupportedDigest(e)), None) => assert_eq!(e, s),
        (Err(e), None) => panic!("{s:?}: digest parse gave a non-digest error {e:?}"),
        (Ok(d), None) => panic!("{s:?} accepted as {d}"),
        (Err(e), Some(_)) => panic!("{s:?} rejected: {e}"),
    }
    // An unsupported algorithm is only reported for a well-formed `algo:encoded`.
    if let Err(NameError::UnsupportedDigest(_)) = &parsed {
        let (algo, _) = s.split_once(':').expect("unsupported digests have a colon");
        assert!(algo != "sha256" && algo != "sha512");
    }
    match s.parse::<Reference>() {
        Ok(Reference::Digest(d)) => assert_eq!(Ok(d), parsed),
        Ok(Reference::Tag(t)) => assert!(!s.contains(':') && t.as_str() == s),
        Err(_) => {}
    }
});
