//! Credentials (DESIGN §6): HMAC-SHA256 tokens signed with the admin secret in `GLCI_HOME`,
//! compared in constant time. Three kinds: `admin` (the host's CLI and `docker login`),
//! `job` (a pipeline job: may push only under its project path) and `access` (short-lived
//! Bearer tokens that `/token` grants: the intersection of the scopes asked and allowed).
//! Parsing of `Authorization` headers and the decision for one request live here too; the
//! registry calls `authorize` once per request, no handler checks credentials.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::encoding::{hex, unhex};
use crate::registry::names::{is_under, Name};
use crate::registry::routes::Action;
use crate::secret::Secret;

/// The user name `docker login` uses with the admin credential.
pub const ADMIN_USER: &str = "glci-admin";
/// The user name GitLab gives jobs (`CI_REGISTRY_USER`).
pub const JOB_USER: &str = "gitlab-ci-token";
const TOKEN_PREFIX: &str = "glci1";
/// How long a Bearer token from `/token` lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub enum AuthError {
    /// The admin secret could not be read or created.
    Secret {
        path: PathBuf,
        source: io::Error,
    },
    /// The token is not one of ours, or its signature is wrong.
    Invalid,
    Expired,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Secret { path, source } => write!(f, "admin secret {}: {source}", path.display()),
            AuthError::Invalid => f.write_str("invalid credentials"),
            AuthError::Expired => f.write_str("credentials expired"),
        }
    }
}

impl std::error::Error for AuthError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Admin,
    Job,
    Access,
}

/// One `type:name:actions` grant, as in Docker's token spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub kind: Kind,
    /// Job (and access tokens derived from a job): the project path it may write under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    /// Unix seconds.
    pub exp: u64,
    #[serde(default)]
    pub push_through: bool,
    /// For access tokens: the admin flag of the identity it was granted to.
    #[serde(default)]
    pub admin: bool,
    /// For access tokens: granted to a client that gave no credentials.
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Access>,
}

impl Claims {
    pub fn admin(ttl: Duration, now: SystemTime) -> Claims {
        Claims {
            kind: Kind::Admin,
            project: None,
            pipeline: None,
            job: None,
            exp: expiry(now, ttl),
            push_through: false,
            admin: true,
            anonymous: false,
            access: vec![],
        }
    }

    pub fn job(project: &str, pipeline: u64, job: u64, push_through: bool, ttl: Duration, now: SystemTime) -> Claims {
        Claims {
            kind: Kind::Job,
            project: Some(project.to_string()),
            pipeline: Some(pipeline),
            job: Some(job),
            exp: expiry(now, ttl),
            push_through,
            admin: false,
            anonymous: false,
            access: vec![],
        }
    }
}

impl Claims {
    /// The identity an access token was granted to.
    fn underlying(&self) -> Identity {
        if self.anonymous {
            Identity::Anonymous
        } else if self.admin {
            Identity::Token(Claims { kind: Kind::Admin, access: vec![], ..self.clone() })
        } else {
            Identity::Token(Claims { kind: Kind::Job, access: vec![], ..self.clone() })
        }
    }
}

/// `now + ttl` in Unix seconds; an absurd `--ttl` saturates instead of panicking.
fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    now.checked_add(ttl).map_or(u64::MAX, unix)
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What `/token` hands out.
pub struct Grant {
    pub token: String,
    pub access: Vec<Access>,
    /// Seconds until the token expires (never later than the credentials it came from).
    pub expires_in: u64,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    Token(Claims),
}

impl Identity {
    /// The admin credential, or a Bearer token `/token` granted to it.
    pub fn is_admin(&self) -> bool {
        matches!(self, Identity::Token(c) if c.kind == Kind::Admin || (c.kind == Kind::Access && c.admin))
    }
}

/// The outcome for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No (or anonymous) credentials: ask for some (401 with a challenge).
    Challenge,
    /// Valid credentials that may not do this (403 `DENIED`).
    Deny,
}

pub struct Auth {
    key: Secret<Vec<u8>>,
    pub anonymous_pull: bool,
}

pub fn admin_secret_path(home: &Path) -> PathBuf {
    home.join("admin.secret")
}

impl Auth {
    pub fn new(key: Vec<u8>, anonymous_pull: bool) -> Auth {
        Auth { key: Secret::new(key), anonymous_pull }
    }

    /// Loads the admin secret from `$GLCI_HOME/admin.secret`, creating it (0600) the first time.
    pub fn load_or_create(home: &Path, anonymous_pull: bool) -> Result<Auth, AuthError> {
        let path = admin_secret_path(home);
        let err = |source| AuthError::Secret { path: path.clone(), source };
        if !path.exists() {
            fs::create_dir_all(home).map_err(err)?;
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(|e| err(io::Error::other(e.to_string())))?;
            // create_new + rename-free: if two processes race, the loser reads the winner's file.
            match crate::durable::create_new(&path, hex(&bytes).as_bytes(), 0o600) {
                Ok(()) => {}
                Err(_) if path.exists() => {}
                Err(e) => return Err(err(io::Error::other(e.to_string()))),
            }
        }
        let text = fs::read_to_string(&path).map_err(err)?;
        let key = text.trim().as_bytes().to_vec();
        if key.len() < 32 {
            return Err(err(io::Error::other("too short; delete it to have a new one made")));
        }
        Ok(Auth::new(key, anonymous_pull))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose()).expect("HMAC takes keys of any length");
        mac.update(payload);
        mac
    }

    /// `glci1.<hex claims>.<hex mac>`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = hex(&serde_json::to_vec(claims).unwrap_or_default());
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{TOKEN_PREFIX}.{payload}.{}", hex(&tag))
    }

    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let mut parts = token.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid);
        };
        let tag = unhex(tag).ok_or(AuthError::Invalid)?;
        // Constant-time comparison of the MAC.
        self.mac(payload.as_bytes()).verify_slice(&tag).map_err(|_| AuthError::Invalid)?;
        let claims: Claims =
            serde_json::from_slice(&unhex(payload).ok_or(AuthError::Invalid)?).map_err(|_| AuthError::Invalid)?;
        if claims.exp <= unix(now) {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// Reads `Authorization` (Basic with a token as password, or Bearer).
    pub fn identify(&self, authorization: Option<&str>, now: SystemTime) -> Result<Identity, AuthError> {
        let Some(value) = authorization else { return Ok(Identity::Anonymous) };
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let (_user, password) = parse_basic(rest).ok_or(AuthError::Invalid)?;
            password
        } else {
            return Err(AuthError::Invalid);
        };
        self.verify(&token, now).map(Identity::Token)
    }

    /// May `identity` do `action` on repository `name` (`None`: the catalog)?
    pub fn decide(&self, identity: &Identity, name: Option<&str>, action: Action) -> Decision {
        if self.actions_allowed(identity, name).contains(&action) {
            return Decision::Allow;
        }
        match identity {
            Identity::Anonymous => Decision::Challenge,
            // A Bearer token without this scope: if the credentials behind it could do it, or
            // there were none, ask again (401, as distribution's `insufficient_scope`), so the
            // client fetches a token with the scope or logs in.
            Identity::Token(c) if c.kind == Kind::Access => {
                let behind = c.underlying();
                if behind == Identity::Anonymous || self.actions_allowed(&behind, name).contains(&action) {
                    Decision::Challenge
                } else {
                    Decision::Deny
                }
            }
            Identity::Token(_) => Decision::Deny,
        }
    }

    /// Everything `identity` may do on `name` (`None`: the catalog).
    pub fn actions_allowed(&self, identity: &Identity, name: Option<&str>) -> Vec<Action> {
        let all = vec![Action::Pull, Action::Push, Action::Delete];
        match identity {
            Identity::Anonymous => {
                if self.anonymous_pull {
                    vec![Action::Pull]
                } else {
                    vec![]
                }
            }
            Identity::Token(claims) => match claims.kind {
                Kind::Admin => all,
                Kind::Job => {
                    let mut actions = vec![Action::Pull];
                    if let (Some(project), Some(name)) = (&claims.project, name) {
                        if is_under(name, project) {
                            actions.extend([Action::Push, Action::Delete]);
                        }
                    }
                    actions
                }
                Kind::Access => {
                    let (resource_type, resource) = match name {
                        Some(n) => ("repository", n),
                        None => ("registry", "catalog"),
                    };
                    let mut actions: Vec<Action> = claims
                        .access
                        .iter()
                        .filter(|a| a.resource_type == resource_type && a.name == resource)
                        .flat_map(|a| a.actions.iter().flat_map(|s| parse_actions(s)))
                        .collect();
                    if self.anonymous_pull && !actions.contains(&Action::Pull) {
                        actions.push(Action::Pull);
                    }
                    actions
                }
            },
        }
    }

    /// The Bearer token `/token` hands out: the scopes asked, cut down to what is allowed.
    pub fn grant(&self, identity: &Identity, scopes: &[Access], now: SystemTime) -> Grant {
        let mut granted = Vec::new();
        for scope in scopes {
            let name = match scope.resource_type.as_str() {
                // Only names a request could carry: `../x` is nothing to grant, and would pass
                // `is_under` for a job (`g/p/../../x` starts with `g/p/`).
                "repository" if scope.name.parse::<Name>().is_ok() => Some(scope.name.as_str()),
                "registry" if scope.name == "catalog" => None,
                _ => continue,
            };
            let allowed = self.actions_allowed(identity, name);
            let actions: Vec<String> = scope
                .actions
                .iter()
                .filter(|a| {
                    let wanted = parse_actions(a);
                    !wanted.is_empty() && wanted.iter().all(|w| allowed.contains(w))
                })
                .cloned()
                .collect();
            if !actions.is_empty() {
                granted.push(Access { resource_type: scope.resource_type.clone(), name: scope.name.clone(), actions });
            }
        }
        let access_ttl = unix(now + ACCESS_TOKEN_TTL);
        let claims = match identity {
            // Never outlive the credentials it was granted for.
            Identity::Token(c) => Claims {
                kind: Kind::Access,
                admin: identity.is_admin(),
                anonymous: false,
                exp: c.exp.min(access_ttl),
                access: granted.clone(),
                ..c.clone()
            },
            Identity::Anonymous => Claims {
                kind: Kind::Access,
                project: None,
                pipeline: None,
                job: None,
                exp: access_ttl,
                push_through: false,
                admin: false,
                anonymous: true,
                access: granted.clone(),
            },
        };
        let expires_in = claims.exp.saturating_sub(unix(now));
        Grant { token: self.sign(&claims), access: granted, expires_in }
    }
}

/// One action word of a scope; `*` means all of them.
fn parse_actions(action: &str) -> Vec<Action> {
    match action {
        "pull" => vec![Action::Pull],
        "push" => vec![Action::Push],
        "delete" => vec![Action::Delete],
        "*" => vec![Action::Pull, Action::Push, Action::Delete],
        _ => vec![],
    }
}

/// Parses a `scope` parameter: `repository:group/app:pull,push` (the name may hold `:` for a
/// registry with a port, so the type is the first field and the actions the last).
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (resource_type, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if name.is_empty() {
        return None;
    }
    Some(Access {
        resource_type: resource_type.to_string(),
        name: name.to_string(),
        actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
    })
}

/// Decodes `Basic <base64(user:password)>`'s payload.
pub fn parse_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// RFC 3339 UTC timestamp for `issued_at`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix(t);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(b"0123456789abcdef0123456789abcdef".to_vec(), true)
    }

    #[test]
    fn tokens_round_trip_and_reject_forgery_and_expiry() {
        let a = auth();
        let now = SystemTime::now();
        let t = a.sign(&Claims::job("g/p", 1, 2, true, Duration::from_secs(60), now));
        let c = a.verify(&t, now).unwrap();
        assert_eq!(c.project.as_deref(), Some("g/p"));
        assert!(c.push_through);
        assert!(matches!(a.verify(&t, now + Duration::from_secs(61)), Err(AuthError::Expired)));
        let other = Auth::new(b"another key another key another!".to_vec(), true);
        assert!(matches!(other.verify(&t, now), Err(AuthError::Invalid)));
        // Tampering with the claims breaks the MAC.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = hex(br#"{"kind":"admin","exp":99999999999}"#);
        parts[1] = &forged;
        assert!(matches!(a.verify(&parts.join("."), now), Err(AuthError::Invalid)));
        assert!(matches!(a.verify("garbage", now), Err(AuthError::Invalid)));
    }

    #[test]
    fn job_tokens_write_only_under_their_project() {
        let a = auth();
        let now = SystemTime::now();
        let job = Identity::Token(Claims::job("group/proj", 1, 1, false, Duration::from_secs(60), now));
        assert_eq!(a.decide(&job, Some("group/proj"), Action::Push), Decision::Allow);
        assert_eq!(a.decide(&job, Some("group/proj/app"), Action::Push), Decision::Allow);
        assert_eq!(a.decide(&job, Some("group/project2"), Action::Push), Decision::Deny);
        assert_eq!(a.decide(&job, Some("other"), Action::Pull), Decision::Allow);
        assert_eq!(a.decide(&Identity::Anonymous, Some("x"), Action::Pull), Decision::Allow);
        assert_eq!(a.decide(&Identity::Anonymous, Some("x"), Action::Push), Decision::Challenge);
        let admin = Identity::Token(Claims::admin(Duration::from_secs(60), now));
        assert_eq!(a.decide(&admin, Some("anything"), Action::Delete), Decision::Allow);
    }

    #[test]
    fn grants_are_the_intersection() {
        let a = auth();
        let now = SystemTime::now();
        let job = Identity::Token(Claims::job("g/p", 1, 1, false, Duration::from_secs(60), now));
        let scopes = vec![
            parse_scope("repository:g/p/app:pull,push").unwrap(),
            parse_scope("repository:other:pull,push").unwrap(),
        ];
        let grant = a.grant(&job, &scopes, now);
        assert_eq!(grant.access[0].actions, vec!["pull", "push"]);
        assert_eq!(grant.access[1].actions, vec!["pull"]);
        assert!(grant.expires_in <= 60, "never outlives the job token");
        let id = a.identify(Some(&format!("Bearer {}", grant.token)), now).unwrap();
        assert_eq!(a.decide(&id, Some("g/p/app"), Action::Push), Decision::Allow);
        assert_eq!(a.decide(&id, Some("other"), Action::Push), Decision::Deny);
        // A token that lacks a scope its credentials would allow: ask again (401).
        let pull_only = a.grant(&job, &[parse_scope("repository:g/p:pull").unwrap()], now);
        let id = a.identify(Some(&format!("Bearer {}", pull_only.token)), now).unwrap();
        assert_eq!(a.decide(&id, Some("g/p"), Action::Push), Decision::Challenge);
        let anon = a.grant(&Identity::Anonymous, &scopes, now);
        assert_eq!(anon.access[0].actions, vec!["pull"]);
        let id = a.identify(Some(&format!("Bearer {}", anon.token)), now).unwrap();
        assert_eq!(a.decide(&id, Some("g/p"), Action::Push), Decision::Challenge);
    }

    #[test]
    fn grants_only_valid_repository_names() {
        let a = auth();
        let now = SystemTime::now();
        let admin = Identity::Token(Claims::admin(Duration::from_secs(60), now));
        let job = Identity::Token(Claims::job("g/p", 1, 1, false, Duration::from_secs(60), now));
        for bad in ["../../x", "g/p/../../x", "g/p/..", "G/P", "g/p%2fx", "g//p", "host:5000/g/p"] {
            let scopes = vec![parse_scope(&format!("repository:{bad}:pull,push")).unwrap()];
            assert!(a.grant(&admin, &scopes, now).access.is_empty(), "admin granted {bad}");
            assert!(a.grant(&job, &scopes, now).access.is_empty(), "job granted {bad}");
        }
        let ok = vec![parse_scope("repository:g/p/app:push").unwrap()];
        // An absurd lifetime saturates rather than panicking.
        assert_eq!(Claims::admin(Duration::from_secs(u64::MAX), now).exp, u64::MAX);
        assert_eq!(a.grant(&job, &ok, now).access.len(), 1);
    }

    #[test]
    fn basic_scope_and_dates() {
        assert_eq!(parse_basic(&base64_encode(b"user:pa:ss")), Some(("user".into(), "pa:ss".into())));
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        let s = parse_scope("repository:host:5000/a:pull").unwrap();
        assert_eq!((s.name.as_str(), s.actions.len()), ("host:5000/a", 1));
        assert!(parse_scope("nonsense").is_none());
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
