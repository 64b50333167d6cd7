//! Path globs as `.gitlab-ci.yml` writes them (`artifacts: paths/exclude`, `cache: paths`,
//! `cache: key: files`, `rules: changes/exists`), compiled once into a [`Globs`] set by the
//! `globset` crate: `*` and `?` within one path segment, `[abc]`/`[a-z]`/`[!a]` classes, `**` for
//! any number of segments, `{a,b}` alternatives (gitlab-runner's `doublestar.Glob`, which it
//! uses for artifacts and cache since 13.0), a dot file matched by `*` like any other (Ruby's
//! `FNM_DOTMATCH`). [`expand_braces`] expands braces the way Ruby's `File::FNM_EXTGLOB` does for
//! `rules:`. Paths are relative, `/`-separated. Pure; used by `plan`, `changes` and `execute`.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A list of patterns compiled into one matcher (a regex set: linear in the path, whatever the
/// pattern, where a backtracking matcher is exponential in the number of `*`).
pub struct Globs(GlobSet);

impl Globs {
    /// A leading `./` and a trailing `/` are ignored. A pattern globset refuses (a class range
    /// such as `[z-a]`) matches nothing, as Ruby's `fnmatch` answers false for it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Globs {
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            let built = GlobBuilder::new(&normalise(pattern.as_ref()))
                .literal_separator(true)
                .backslash_escape(true)
                .allow_unclosed_class(true)
                .empty_alternates(true)
                .build();
            if let Ok(glob) = built {
                set.add(glob);
            }
        }
        Globs(set.build().unwrap_or_else(|_| GlobSet::empty()))
    }

    /// Whether `path` matches one of the patterns.
    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(normalise(path))
    }

    /// Whether `path` or one of its ancestor directories matches: a pattern naming a directory
    /// takes everything in it.
    pub fn matches_self_or_ancestor(&self, path: &str) -> bool {
        let path = normalise(path);
        let ancestors = path.match_indices('/').map(|(end, _)| &path[..end]);
        let hit = ancestors.chain([path.as_str()]).any(|p| self.0.is_match(p));
        hit
    }
}

/// The leading segments of `pattern` without wildcards, joined by `/` (empty when the first
/// segment already has one): the directory worth copying out of a container.
pub fn literal_prefix(pattern: &str) -> String {
    let pattern = normalise(pattern);
    pattern.split('/').take_while(|s| !s.contains(['*', '?', '[', '{', '\\'])).collect::<Vec<_>>().join("/")
}

/// `./a//b/` → `a/b`.
fn normalise(text: &str) -> String {
    let text = text.trim();
    let text = text.strip_prefix("./").unwrap_or(text);
    text.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

/// Most patterns one brace expansion may make (bounds hostile input).
const MAX_BRACE_EXPANSIONS: usize = 1024;

/// Ruby's `File::FNM_EXTGLOB` braces, which GitLab's `rules: changes`/`exists` honour:
/// `src/*.{rs,toml}` → `src/*.rs`, `src/*.toml`; nested braces expand too, a brace without its
/// partner (or without a comma inside) stays literal, `\{` is not a brace. The braces left are
/// escaped, so that [`Globs`] reads them as the literal characters Ruby sees.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out);
    out
}

fn expand_into(pattern: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_BRACE_EXPANSIONS {
        return;
    }
    let Some((open, close, commas)) = first_brace_group(pattern) else {
        out.push(escape_braces(pattern));
        return;
    };
    let (prefix, body, suffix) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let mut start = 0;
    for end in commas.iter().map(|c| c - open - 1).chain([body.len()]) {
        expand_into(&format!("{prefix}{}{suffix}", &body[start..end]), out);
        start = end + 1;
    }
}

/// `{` and `}` not already escaped get a `\`.
fn escape_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The first `{...}` with a top-level comma: byte offsets of `{`, `}` and the commas.
fn first_brace_group(pattern: &str) -> Option<(usize, usize, Vec<usize>)> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => {
                let (mut depth, mut commas, mut j) = (0usize, Vec::new(), i + 1);
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' => j += 1,
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                if j < bytes.len() && !commas.is_empty() {
                    return Some((i, j, commas));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        Globs::new(&[pattern]).matches(path)
    }

    #[test]
    fn stars_questions_and_classes() {
        assert!(matches("*.txt", "a.txt"));
        assert!(matches("*.txt", ".hidden.txt"));
        assert!(!matches("*.txt", "d/a.txt"));
        assert!(matches("d/?.txt", "d/a.txt"));
        assert!(!matches("?", "/"));
        assert!(matches("file[0-9].log", "file7.log"));
        assert!(!matches("file[!0-9].log", "file7.log"));
        assert!(matches("file[^0-9].log", "fileX.log"));
        assert!(matches("a[bc", "a[bc"), "an unclosed class is literal");
        assert!(!matches("[z-a]", "b"), "an invalid range matches nothing");
        assert!(matches("\\*", "*"));
        assert!(!matches("\\*", "x"));
        assert!(matches("./build/", "build"));
        assert!(!matches("build", "build/x"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches("**/*.o", "a.o"));
        assert!(matches("**/*.o", "x/y/a.o"));
        assert!(matches("**/*.o", ".cache/y/a.o"));
        assert!(matches("bin/**/*.o", "bin/a.o"));
        assert!(matches("bin/**", "bin/x/y"));
        assert!(matches("**", "anything/at/all"));
        assert!(!matches("bin/**/*.o", "lib/a.o"));
    }

    #[test]
    fn alternatives_as_the_runner_globs_artifacts() {
        assert!(matches("a.{rpm,deb}", "a.deb"));
        assert!(matches("{dist,out}/**", "out/x/y"));
        assert!(matches("x{,.bak}", "x"));
        assert!(!matches("a.{rpm,deb}", "a.zip"));
    }

    #[test]
    fn a_hostile_pattern_stays_fast() {
        let pattern = "*a".repeat(30) + "b";
        let path = "a".repeat(60);
        assert!(!matches(&pattern, &path));
    }

    #[test]
    fn one_set_of_many_patterns() {
        let globs = Globs::new(&["*.md", "docs/**"]);
        assert!(globs.matches("README.md"));
        assert!(globs.matches("docs/a/b.txt"));
        assert!(!globs.matches("src/main.rs"));
        assert!(!Globs::new::<&str>(&[]).matches("anything"));
    }

    #[test]
    fn braces_expand_as_rubys_extglob() {
        assert_eq!(expand_braces("src/*.{rs,toml}"), ["src/*.rs", "src/*.toml"]);
        assert_eq!(expand_braces("{a,b{c,d}}/x"), ["a/x", "bc/x", "bd/x"]);
        assert_eq!(expand_braces("{a,}z"), ["az", "z"]);
        assert_eq!(expand_braces("no{brace"), ["no\\{brace"]);
        assert_eq!(expand_braces("{single}"), ["\\{single\\}"]);
        assert_eq!(expand_braces("\\{a,b}"), ["\\{a,b\\}"]);
        assert_eq!(expand_braces("{a,b}{c,d}"), ["ac", "ad", "bc", "bd"]);
        assert!(expand_braces(&"{a,b}".repeat(20)).len() <= MAX_BRACE_EXPANSIONS);
    }

    #[test]
    fn literal_braces_left_by_the_expansion_match_themselves() {
        let rules = |pattern: &str, path: &str| Globs::new(&expand_braces(pattern)).matches(path);
        assert!(rules("no{brace", "no{brace"));
        assert!(rules("{single}", "{single}"));
        assert!(!rules("{single}", "single"));
        assert!(rules("src/*.{rs,toml}", "src/Cargo.toml"));
    }

    #[test]
    fn ancestors_and_prefixes() {
        let under = |pattern: &str, path: &str| Globs::new(&[pattern]).matches_self_or_ancestor(path);
        assert!(under("build", "build/sub/a.txt"));
        assert!(under("out/*", "out/sub/a.txt"));
        assert!(!under("out/*.txt", "out/sub/a.bin"));
        assert!(!under("build", "builder/a.txt"));
        assert_eq!(literal_prefix("build/out/*.txt"), "build/out");
        assert_eq!(literal_prefix("./dist/"), "dist");
        assert_eq!(literal_prefix("**/*.txt"), "");
        assert_eq!(literal_prefix("{dist,out}/x"), "");
    }
}
