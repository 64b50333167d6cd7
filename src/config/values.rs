//! The grammars of `config.toml`'s values: durations (`30m`), TLS SANs, upstream hosts
//! and endpoint URLs, and whole-string `"$NAME"` references. Pure functions.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use super::San;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (use forms like 30m, 48h, 7d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(invalid()),
    };
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    if n == 0 {
        return Err(format!("invalid duration {text:?} (must be more than zero)"));
    }
    let secs = n.checked_mul(unit_secs).ok_or_else(|| format!("invalid duration {text:?} (too long)"))?;
    Ok(Duration::from_secs(secs))
}

/// The inverse of [`parse_duration`] in the largest of `s`, `m`, `h` that is exact
/// (`24h`, not `1d`, to match how the docs spell the defaults). Sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs != 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl FromStr for San {
    type Err = String;

    /// An IP address, or a DNS name (letters, digits, `-`; labels of 1-63 characters;
    /// at most 253 in all; a leading `*.` wildcard allowed; not all-numeric at the end).
    fn from_str(s: &str) -> Result<San, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        if is_dns_name(s) {
            Ok(San::Dns(s.to_owned()))
        } else {
            Err(format!("invalid SAN {s:?} (use a DNS name like my-host.example or an IP address)"))
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    let body = s.strip_prefix("*.").unwrap_or(s);
    if s.is_empty() || s.len() > 253 || body.is_empty() {
        return false;
    }
    let labels_ok = body.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    // An all-numeric last label is a mistyped IP address (`10.0.0.300`), not a name.
    let last_is_numeric = body.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_is_numeric
}

/// An upstream in `[registry] upstreams` is a host (optionally `:port`), never a URL:
/// endpoints belong in `[registry.upstream_urls]`.
pub(super) fn check_upstream_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.contains("://") || host.contains('/') || host.contains(char::is_whitespace) {
        Err(format!(
            "invalid upstream {host:?} (use a host name like registry-1.docker.io; \
             map it to a URL in [registry.upstream_urls])"
        ))
    } else {
        Ok(())
    }
}

/// An endpoint in `[registry.upstream_urls]`: `http://` or `https://` and a host;
/// returned without trailing `/`.
pub(super) fn check_upstream_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("invalid URL {url:?} (must start with http:// or https:// and name a host)")),
    }
}

/// `"$NAME"` or `"${NAME}"` as a whole string → `NAME`; anything else is literal.
pub(super) fn env_reference(s: &str) -> Option<&str> {
    let name = match s.strip_prefix("${") {
        Some(rest) => rest.strip_suffix('}')?,
        None => s.strip_prefix('$')?,
    };
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}
