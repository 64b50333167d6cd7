//! Pure: a job's coverage out of its log, as GitLab takes it (`Gitlab::Ci::Trace#extract_coverage`):
//! the last log line the `coverage:` regex matches; in it, the last match (or its last capture
//! group), and of that the first number. Used by `execute::job` on every line of the job's output.

use regex::Regex;

/// The coverage a line gives, if the regex matches it and the match holds a number.
pub fn from_line(regex: &Regex, line: &str) -> Option<String> {
    let last = regex.captures_iter(line).last()?;
    // GitLab flattens the match's groups and takes the last one that is set.
    let text = (1..last.len()).rev().find_map(|i| last.get(i)).or_else(|| last.get(0))?.as_str();
    let number = Regex::new(r"\d+(\.\d+)?").ok()?;
    number.find(text).map(|m| m.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_first_number_of_the_last_match() {
        let re = Regex::new(r"Coverage: \d+\.\d+%").expect("regex");
        assert_eq!(from_line(&re, "Coverage: 81.50% of lines"), Some("81.50".into()));
        assert_eq!(from_line(&re, "no coverage here"), None);
        let groups = Regex::new(r"total:\s+\(statements\)\s+(\d+\.\d+)%").expect("regex");
        assert_eq!(from_line(&groups, "total:   (statements)   72.3%"), Some("72.3".into()));
        let twice = Regex::new(r"cov \d+").expect("regex");
        assert_eq!(from_line(&twice, "cov 10 then cov 20"), Some("20".into()));
    }
}
