//! The token parser (`auth`): `Authorization` headers (Basic/Bearer), `glci1.<hex>.<hex>`
//! tokens, claims JSON behind a valid MAC, `scope` parameters, base64. Input: a selector
//! byte, then the text. Invariants: no panic; forged tokens never verify; tokens glci signs
//! verify to the same claims; base64 round-trips.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use glci::auth::{self, Auth, AuthError, Identity};
use glci::registry::routes::Action;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: &[u8] = b"fuzzing-key-fuzzing-key-fuzzing-key!";

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| Auth::new(KEY.to_vec(), true))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token over `payload` (claims JSON) with a correct MAC, as only the key holder can make.
fn signed(payload: &[u8]) -> String {
    let payload = hex(payload);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).expect("any key length");
    mac.update(payload.as_bytes());
    format!("glci1.{payload}.{}", hex(&mac.finalize().into_bytes()))
}

fn exercise(identity: &Identity, scope_text: &str, now: SystemTime) {
    let auth = auth();
    let scopes: Vec<auth::Access> = scope_text.split(' ').filter_map(auth::parse_scope).collect();
    for s in &scopes {
        assert!(!s.name.is_empty());
    }
    for name in [None, Some("group/app"), Some(scope_text)] {
        for action in [Action::Pull, Action::Push, Action::Delete] {
            let _ = auth.decide(identity, name, action);
        }
    }
    let grant = auth.grant(identity, &scopes, now);
    // What /token hands out verifies, and grants nothing beyond what was asked.
    let claims = auth.verify(&grant.token, now).expect("a granted token verifies");
    for a in &claims.access {
        assert!(scopes.iter().any(|s| s.resource_type == a.resource_type && s.name == a.name));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let auth = auth();
    match selector % 4 {
        0 => {
            // An Authorization header as a client sends it.
            match auth.identify(Some(&text), now) {
                Ok(Identity::Token(claims)) => panic!("forged header {text:?} verified: {claims:?}"),
                Ok(Identity::Anonymous) => panic!("a header must not be anonymous"),
                Err(AuthError::Invalid | AuthError::Expired) => {}
                Err(e) => panic!("{e}"),
            }
            if let Some((user, password)) = auth::parse_basic(&text) {
                let again = auth::base64_encode(format!("{user}:{password}").as_bytes());
                assert_eq!(auth::parse_basic(&again), Some((user, password)));
            }
            assert!(auth.verify(&text, now).is_err());
        }
        1 => {
            // Claims JSON behind a valid MAC: reachable only with the key, must still not panic.
            let token = signed(rest);
            let header = format!("Basic {}", auth::base64_encode(format!("gitlab-ci-token:{token}").as_bytes()));
            let verified = auth.verify(&token, now);
            let identified = auth.identify(Some(&header), now);
            assert_eq!(
                verified.as_ref().ok(),
                identified.as_ref().ok().and_then(|i| match i {
                    Identity::Token(c) => Some(c),
                    Identity::Anonymous => None,
                })
            );
            if let Ok(claims) = verified {
                assert!(claims.exp > auth::unix(now));
                let resigned = auth.sign(&claims);
                assert_eq!(auth.verify(&resigned, now).ok(), Some(claims.clone()));
                exercise(&Identity::Token(claims), &text, now);
            }
        }
        2 => {
            exercise(&Identity::Anonymous, &text, now);
            let project = text.split(' ').next().unwrap_or_default();
            let job = auth::Claims::job(project, 1, 2, false, Duration::from_secs(60), now);
            exercise(&Identity::Token(job), &text, now);
        }
        _ => {
            let decoded = auth::base64_decode(&text);
            let encoded = auth::base64_encode(rest);
            assert_eq!(auth::base64_decode(&encoded).as_deref(), Some(rest));
            if let Some(bytes) = decoded {
                assert!(bytes.len() <= text.len());
            }
        }
    }
});
