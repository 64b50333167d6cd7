//! The OCI distribution-spec grammar for repository names, tags and digests, in `FromStr`.
//! A value of these types is safe to use as (part of) a path: no `..`, no `/` in a tag, no
//! empty component. Nothing else lives here.

use std::fmt;
use std::str::FromStr;

/// Longest repository name accepted (distribution and docker agree on 255).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    Name(String),
    Tag(String),
    /// Well-formed `algo:encoded` with an algorithm we do not implement.
    UnsupportedDigest(String),
    Digest(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Name(n) => write!(f, "invalid repository name {n:?}"),
            NameError::Tag(t) => write!(f, "invalid tag {t:?}"),
            NameError::UnsupportedDigest(d) => {
                write!(f, "unsupported digest algorithm in {d:?} (sha256 and sha512 are)")
            }
            NameError::Digest(d) => write!(f, "invalid digest {d:?}"),
        }
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(is_path_component) {
            return Err(NameError::Name(s.to_string()));
        }
        Ok(Name(s.to_string()))
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components, each guaranteed to be a plain file name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::Tag(s.to_string()))
        }
    }
}

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// `algorithm:encoded`, with algorithm `[a-z0-9]+([+._-][a-z0-9]+)*` and encoded
/// `[a-zA-Z0-9=_-]+`; sha256 and sha512 additionally need lowercase hex of their length.
impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Digest, NameError> {
        let bad = || NameError::Digest(s.to_string());
        let (algo, encoded) = s.split_once(':').ok_or_else(bad)?;
        let algo_ok =
            !algo.is_empty() && algo.split(['+', '.', '_', '-']).all(|p| !p.is_empty() && p.bytes().all(is_alnum));
        let encoded_ok = !encoded.is_empty()
            && encoded.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'));
        if !algo_ok || !encoded_ok {
            return Err(bad());
        }
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(NameError::UnsupportedDigest(s.to_string())),
        };
        if encoded.len() != algorithm.hex_len()
            || !encoded.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(bad());
        }
        Ok(Digest { algorithm, hex: encoded.to_string() })
    }
}

impl Digest {
    pub fn new(algorithm: Algorithm, hex: String) -> Digest {
        debug_assert_eq!(hex.len(), algorithm.hex_len());
        Digest { algorithm, hex }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// True when repository `name` is `project` or below it (`a/b/c` is under `a/b`, `a/bc` is
/// not): the scope of a job token and of `glci registry clean --project`.
pub fn is_under(name: &str, project: &str) -> bool {
    name == project || name.strip_prefix(project).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_a_project() {
        assert!(is_under("a/b", "a/b"));
        assert!(is_under("a/b/c", "a/b"));
        assert!(!is_under("a/bc", "a/b"));
        assert!(!is_under("a", "a/b"));
    }

    #[test]
    fn names() {
        for ok in ["a", "library/alpine", "a/b/c", "a.b", "a_b", "a__b", "a---b", "0", "g/p/app-1.2"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/.",
            "_a",
            "a_",
            "a___b",
            "a-",
            "a.-b",
            "a b",
            "a%2fb",
            &"a".repeat(256),
        ] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert!(format!("sha256:{hex}").parse::<Digest>().is_ok());
        assert!(format!("sha512:{}", "0".repeat(128)).parse::<Digest>().is_ok());
        assert_eq!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(NameError::Digest(format!("sha256:{}", "A".repeat(64))))
        );
        assert!(matches!("sha256:abc".parse::<Digest>(), Err(NameError::Digest(_))));
        assert!(matches!("md5:abc".parse::<Digest>(), Err(NameError::UnsupportedDigest(_))));
        assert!(matches!("sha256".parse::<Digest>(), Err(NameError::Digest(_))));
        assert!(matches!("sha256:../../etc".parse::<Digest>(), Err(NameError::Digest(_))));
        assert!(matches!(format!("sha256:{hex}").parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
    }
}
