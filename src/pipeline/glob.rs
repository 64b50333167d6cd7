//! Path globs as `.gitlab-ci.yml` writes them (`artifacts: paths/exclude`, `rules: exists`):
//! `*` and `?` within one path segment, `[abc]`/`[a-z]`/`[!a]` classes, and `**` for any number
//! of segments; [`expand_braces`] for `{a,b}` (rules). Paths are relative, `/`-separated. Pure;
//! used by `plan`, `changes` and `execute`.

/// Whether `path` matches `pattern` (a leading `./` and trailing `/` are ignored on both).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = segments(pattern);
    let path: Vec<&str> = segments(path);
    match_segments(&pattern, &path)
}

/// Whether `path` or one of its ancestor directories matches `pattern`: a path pattern naming a
/// directory takes everything in it.
pub fn matches_self_or_ancestor(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = segments(pattern);
    let path: Vec<&str> = segments(path);
    (1..=path.len()).any(|n| match_segments(&pattern, &path[..n]))
}

/// The leading segments of `pattern` without wildcards, joined by `/` (empty when the first
/// segment already has one): the directory worth copying out of a container.
pub fn literal_prefix(pattern: &str) -> String {
    segments(pattern).into_iter().take_while(|s| !s.contains(['*', '?', '['])).collect::<Vec<_>>().join("/")
}

/// Most patterns one brace expansion may make (bounds hostile input).
const MAX_BRACE_EXPANSIONS: usize = 1024;

/// Ruby's `File::FNM_EXTGLOB` braces, which GitLab's `rules: changes`/`exists` honour:
/// `src/*.{rs,toml}` → `src/*.rs`, `src/*.toml`; nested braces expand too, a brace without its
/// partner (or without a comma inside) stays literal, `\{` is not a brace.
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
        out.push(pattern.to_string());
        return;
    };
    let (prefix, body, suffix) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let mut start = 0;
    for end in commas.iter().map(|c| c - open - 1).chain([body.len()]) {
        expand_into(&format!("{prefix}{}{suffix}", &body[start..end]), out);
        start = end + 1;
    }
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

fn segments(text: &str) -> Vec<&str> {
    let text = text.trim();
    let text = text.strip_prefix("./").unwrap_or(text);
    text.split('/').filter(|s| !s.is_empty() && *s != ".").collect()
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => match_segment(first, segment) && match_segments(rest, path_rest),
            None => false,
        },
    }
}

/// One segment: `*`, `?`, classes; a `**` inside a segment acts as `*`.
fn match_segment(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_chars(&p, &t)
}

fn match_chars(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|skip| match_chars(&p[1..], &t[skip..])),
        Some('?') => !t.is_empty() && match_chars(&p[1..], &t[1..]),
        Some('[') => match (class(&p[1..]), t.first()) {
            (Some((matcher, len)), Some(c)) => matcher(*c) && match_chars(&p[1 + len..], &t[1..]),
            (None, Some(c)) => *c == '[' && match_chars(&p[1..], &t[1..]),
            (_, None) => false,
        },
        Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && match_chars(&p[2..], &t[1..]),
        Some(c) => t.first() == Some(c) && match_chars(&p[1..], &t[1..]),
    }
}

type ClassMatcher = Box<dyn Fn(char) -> bool>;

/// A class after its `[`: the matcher and how many chars it used (with the `]`).
fn class(p: &[char]) -> Option<(ClassMatcher, usize)> {
    let (negated, start) = match p.first() {
        Some('!') | Some('^') => (true, 1),
        _ => (false, 0),
    };
    // A `]` right after the opening is a member, as in POSIX.
    let close = p.iter().enumerate().skip(start + 1).find(|(_, c)| **c == ']').map(|(i, _)| i)?;
    let body: Vec<char> = p[start..close].to_vec();
    let matcher = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < body.len() {
            if i + 2 < body.len() && body[i + 1] == '-' {
                hit |= body[i] <= c && c <= body[i + 2];
                i += 3;
            } else {
                hit |= body[i] == c;
                i += 1;
            }
        }
        hit != negated
    };
    Some((Box::new(matcher), close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_questions_and_classes() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "d/a.txt"));
        assert!(matches("d/?.txt", "d/a.txt"));
        assert!(matches("file[0-9].log", "file7.log"));
        assert!(!matches("file[!0-9].log", "file7.log"));
        assert!(matches("./build/", "build"));
        assert!(!matches("build", "build/x"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches("**/*.o", "a.o"));
        assert!(matches("**/*.o", "x/y/a.o"));
        assert!(matches("bin/**/*.o", "bin/a.o"));
        assert!(matches("bin/**", "bin/x/y"));
        assert!(matches("**", "anything/at/all"));
        assert!(!matches("bin/**/*.o", "lib/a.o"));
    }

    #[test]
    fn braces_expand_as_rubys_extglob() {
        assert_eq!(expand_braces("src/*.{rs,toml}"), ["src/*.rs", "src/*.toml"]);
        assert_eq!(expand_braces("{a,b{c,d}}/x"), ["a/x", "bc/x", "bd/x"]);
        assert_eq!(expand_braces("{a,}z"), ["az", "z"]);
        assert_eq!(expand_braces("no{brace"), ["no{brace"]);
        assert_eq!(expand_braces("{single}"), ["{single}"]);
        assert_eq!(expand_braces("\\{a,b}"), ["\\{a,b}"]);
        assert_eq!(expand_braces("{a,b}{c,d}"), ["ac", "ad", "bc", "bd"]);
        assert!(expand_braces(&"{a,b}".repeat(20)).len() <= MAX_BRACE_EXPANSIONS);
    }

    #[test]
    fn ancestors_and_prefixes() {
        assert!(matches_self_or_ancestor("build", "build/sub/a.txt"));
        assert!(matches_self_or_ancestor("out/*", "out/sub/a.txt"));
        assert!(!matches_self_or_ancestor("out/*.txt", "out/sub/a.bin"));
        assert_eq!(literal_prefix("build/out/*.txt"), "build/out");
        assert_eq!(literal_prefix("./dist/"), "dist");
        assert_eq!(literal_prefix("**/*.txt"), "");
    }
}
