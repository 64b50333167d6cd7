//! HTTP to upstream registries, and only here (ureq). Endpoints come from
//! `[registry.upstream_urls]` (else `https://<host>`); authentication follows the upstream's
//! own challenge (Bearer realm/service/scope — GitLab's service is `container_registry`, not
//! its host — or Basic), with tokens cached per host and scope until they expire. Redirects
//! (Docker Hub's CDN) are followed without `Authorization` (ureq's default). Every failure
//! becomes an `UpstreamError` naming the host; nothing here logs credentials.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::encoding::base64_encode;
use crate::secret::Secret;

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug)]
pub enum UpstreamError {
    /// The upstream does not have it (404, or a name it does not know).
    NotFound {
        host: String,
    },
    Unreachable {
        host: String,
        detail: String,
    },
    Timeout {
        host: String,
    },
    /// Any other non-success status; `retry_after` kept for 429.
    Status {
        host: String,
        status: u16,
        retry_after: Option<String>,
    },
    /// The upstream answered something we will not cache (wrong digest, bad JSON...).
    Invalid {
        host: String,
        detail: String,
    },
    /// Our own storage failed while caching what the upstream sent (a full disk): not the
    /// upstream's fault, and answered as any storage failure is (507 for a full disk).
    Local(crate::registry::storage::StoreError),
}

impl UpstreamError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::NotFound { host } => write!(f, "upstream {host}: not found"),
            UpstreamError::Unreachable { host, detail } => write!(f, "upstream {host} unreachable: {detail}"),
            UpstreamError::Timeout { host } => write!(f, "upstream {host} timed out"),
            UpstreamError::Status { host, status, .. } => write!(f, "upstream {host} answered {status}"),
            UpstreamError::Invalid { host, detail } => write!(f, "upstream {host} sent invalid content: {detail}"),
            UpstreamError::Local(e) => write!(f, "caching failed: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://x/token",service="s",scope="a:b:c,d"` (quoted values may hold
/// commas and escaped quotes).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.trim().is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// How long Basic credentials a challenge asked for are sent unasked (they are static).
const BASIC_LIFETIME: Duration = Duration::from_secs(3600);

/// Looks up credentials for an upstream host (config, then the host's docker config).
pub type CredentialSource = Box<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

pub struct UpstreamClient {
    agent: ureq::Agent,
    endpoints: BTreeMap<String, String>,
    credentials: CredentialSource,
    /// (host, scope) → (Authorization value, valid until).
    tokens: Mutex<HashMap<(String, String), (Secret, Instant)>>,
}

/// Produces a request body (again, for a retry after a challenge) and its length.
pub type BodySource<'a> = &'a dyn Fn() -> std::io::Result<(Box<dyn Read>, u64)>;

/// A request to an upstream: absolute URL, the repository it concerns (for the token scope),
/// whether it writes, extra headers and an optional body.
pub struct Outgoing<'a> {
    pub method: &'a str,
    pub url: String,
    pub target: &'a Target<'a>,
    pub push: bool,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<BodySource<'a>>,
}

/// What a request to the upstream is for; decides the token scope.
pub struct Target<'a> {
    pub host: &'a str,
    pub repository: &'a str,
}

impl UpstreamClient {
    pub fn new(
        endpoints: BTreeMap<String, String>,
        credentials: CredentialSource,
        timeout: Duration,
    ) -> UpstreamClient {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(timeout)
            .timeout_write(timeout)
            .redirects(5)
            .user_agent(concat!("glci/", env!("CARGO_PKG_VERSION")))
            .build();
        UpstreamClient { agent, endpoints, credentials, tokens: Mutex::new(HashMap::new()) }
    }

    /// The base URL of `host`, without a trailing slash.
    pub fn endpoint(&self, host: &str) -> String {
        self.endpoints.get(host).cloned().unwrap_or_else(|| format!("https://{host}"))
    }

    /// `method` on `/v2/<repository>/<suffix>` with pull access, authenticating as asked.
    pub fn request(
        &self,
        method: &str,
        target: &Target<'_>,
        suffix: &str,
        accept: Option<&str>,
    ) -> Result<ureq::Response, UpstreamError> {
        let url = format!("{}/v2/{}/{}", self.endpoint(target.host), target.repository, suffix);
        let headers: Vec<(&str, String)> = accept.map(|a| ("Accept", a.to_string())).into_iter().collect();
        self.send(&Outgoing { method, url, target, push: false, headers, body: None })
    }

    /// Sends one request, answering a 401 challenge once (a body is produced anew for the retry).
    pub fn send(&self, outgoing: &Outgoing<'_>) -> Result<ureq::Response, UpstreamError> {
        let target = outgoing.target;
        let actions = if outgoing.push { "pull,push" } else { "pull" };
        let scope = format!("repository:{}:{actions}", target.repository);
        let key = (target.host.to_string(), scope.clone());
        let mut authorization = self.cached_token(&key);
        for attempt in 0..2 {
            let mut request = self.agent.request(outgoing.method, &outgoing.url);
            for (name, value) in &outgoing.headers {
                request = request.set(name, value);
            }
            if let Some(value) = &authorization {
                request = request.set("Authorization", value.expose());
            }
            let result = match &outgoing.body {
                None => request.call(),
                Some(body) => {
                    let (reader, len) = body().map_err(|e| UpstreamError::Invalid {
                        host: target.host.to_string(),
                        detail: format!("reading local content: {e}"),
                    })?;
                    request.set("Content-Length", &len.to_string()).send(reader)
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(401, response)) if attempt == 0 => {
                    let header = response.header("WWW-Authenticate").unwrap_or("").to_string();
                    authorization = Some(self.authenticate(target.host, &header, &scope, &key)?);
                }
                Err(e) => return Err(self.error(target.host, e)),
            }
        }
        Err(UpstreamError::Status { host: target.host.to_string(), status: 401, retry_after: None })
    }

    fn cached_token(&self, key: &(String, String)) -> Option<Secret> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(key).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.clone())
    }

    /// Answers a challenge: a Bearer token from the realm, or Basic credentials.
    fn authenticate(
        &self,
        host: &str,
        header: &str,
        scope: &str,
        key: &(String, String),
    ) -> Result<Secret, UpstreamError> {
        let denied = || UpstreamError::Status { host: host.to_string(), status: 401, retry_after: None };
        let challenge = parse_challenge(header).ok_or_else(denied)?;
        let credentials = (self.credentials)(host);
        let basic = credentials
            .as_ref()
            .map(|c| format!("Basic {}", base64_encode(format!("{}:{}", c.username, c.password.expose()).as_bytes())));
        match challenge.scheme.as_str() {
            "basic" => {
                // Cached like a token: otherwise every request (and every blob body) goes out
                // twice, once unauthenticated to draw the 401.
                let value = Secret::new(basic.ok_or_else(denied)?);
                let until = Instant::now() + BASIC_LIFETIME;
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), (value.clone(), until));
                Ok(value)
            }
            "bearer" => {
                let realm = challenge.params.get("realm").ok_or_else(denied)?;
                let mut url = format!("{realm}{}", if realm.contains('?') { "&" } else { "?" });
                if let Some(service) = challenge.params.get("service") {
                    url.push_str(&format!("service={}&", crate::http::percent_encode(service)));
                }
                let scope = challenge.params.get("scope").map(String::as_str).unwrap_or(scope);
                url.push_str(&format!("scope={}", crate::http::percent_encode(scope)));
                let mut request = self.agent.get(&url);
                if let Some(basic) = &basic {
                    request = request.set("Authorization", basic);
                }
                let response = request.call().map_err(|e| self.error(host, e))?;
                let mut text = Vec::new();
                response.into_reader().take(1024 * 1024).read_to_end(&mut text).map_err(|e| {
                    UpstreamError::Invalid { host: host.to_string(), detail: format!("token response: {e}") }
                })?;
                let body: serde_json::Value = serde_json::from_slice(&text).map_err(|e| UpstreamError::Invalid {
                    host: host.to_string(),
                    detail: format!("token response: {e}"),
                })?;
                let token = body["token"].as_str().or_else(|| body["access_token"].as_str()).ok_or_else(|| {
                    UpstreamError::Invalid { host: host.to_string(), detail: "token response without a token".into() }
                })?;
                let lifetime = body["expires_in"].as_u64().unwrap_or(60).max(10);
                let value = Secret::new(format!("Bearer {token}"));
                let until = Instant::now() + Duration::from_secs(lifetime - 5);
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), (value.clone(), until));
                Ok(value)
            }
            _ => Err(denied()),
        }
    }

    fn error(&self, host: &str, error: ureq::Error) -> UpstreamError {
        let host = host.to_string();
        match error {
            ureq::Error::Status(404, _) => UpstreamError::NotFound { host },
            ureq::Error::Status(status, response) => {
                let retry_after = response.header("Retry-After").map(str::to_string);
                UpstreamError::Status { host, status, retry_after }
            }
            ureq::Error::Transport(t) => {
                // A read/connect timeout surfaces as an io::Error somewhere in the source chain.
                let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&t);
                let mut timed_out = false;
                while let Some(e) = source {
                    if let Some(io) = e.downcast_ref::<std::io::Error>() {
                        timed_out |= matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
                    }
                    source = e.source();
                }
                let detail = t.to_string();
                timed_out |= detail.contains("timed out") || detail.contains("Resource temporarily unavailable");
                if timed_out {
                    UpstreamError::Timeout { host }
                } else {
                    UpstreamError::Unreachable { host, detail: t.kind().to_string() }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://gitlab.com/jwt/auth",service="container_registry",scope="repository:g/p:pull,push""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://gitlab.com/jwt/auth");
        assert_eq!(c.params["service"], "container_registry");
        assert_eq!(c.params["scope"], "repository:g/p:pull,push");
        let c = parse_challenge(r#"Basic realm="x \"y\"""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "x \"y\"");
        let c = parse_challenge("Bearer realm=http://a/token, service=svc").unwrap();
        assert_eq!(c.params["service"], "svc");
    }
}
