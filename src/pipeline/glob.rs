//! Path globs as `.gitlab-ci.yml` writes them (`artifacts: paths/exclude`, `rules: exists`):
//! `*` and `?` within one path segment, `[abc]`/`[a-z]`/`[!a]` classes, and `**` for any number
//! of segments. Paths are relative, `/`-separated. Pure; used by `plan` and `execute`.

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
    fn ancestors_and_prefixes() {
        assert!(matches_self_or_ancestor("build", "build/sub/a.txt"));
        assert!(matches_self_or_ancestor("out/*", "out/sub/a.txt"));
        assert!(!matches_self_or_ancestor("out/*.txt", "out/sub/a.bin"));
        assert_eq!(literal_prefix("build/out/*.txt"), "build/out");
        assert_eq!(literal_prefix("./dist/"), "dist");
        assert_eq!(literal_prefix("**/*.txt"), "");
    }
}
