//! `artifacts: reports: dotenv` files parsed as GitLab parses them
//! (`Ci::ParseDotenvArtifactService`): every line `KEY=VALUE` (split at the first `=`, both
//! sides stripped of surrounding whitespace), keys of letters, digits and `_`; no empty lines,
//! comments or multi-line values; at most 5 KiB and 20 variables (the default `dotenv_size` and
//! `dotenv_variables` plan limits) over all of a job's dotenv files. Pure.

/// GitLab's default `dotenv_size` limit, bytes per file.
pub const MAX_SIZE: usize = 5 * 1024;
/// GitLab's default `dotenv_variables` limit, per job.
pub const MAX_VARIABLES: usize = 20;
/// A variable name's longest length (`Ci::JobVariable` validation).
const MAX_KEY_LEN: usize = 255;

/// Parses one file, appending to `into` (a later line of the same key wins); errors name
/// `file:line`.
pub fn parse(file: &str, text: &[u8], into: &mut Vec<(String, String)>) -> Result<(), String> {
    if text.len() > MAX_SIZE {
        return Err(format!("{file}: dotenv files cannot be more than {MAX_SIZE} bytes ({} bytes)", text.len()));
    }
    let text = std::str::from_utf8(text).map_err(|_| format!("{file}: not UTF-8 text"))?;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{at}: invalid format: expected KEY=VALUE (no empty lines or comments)"));
        };
        let key = key.trim();
        let valid =
            !key.is_empty() && key.len() <= MAX_KEY_LEN && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{at}: invalid variable name {key:?} (letters, digits and _ only)"));
        }
        let value = value.trim().to_string();
        match into.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => into.push((key.to_string(), value)),
        }
        if into.len() > MAX_VARIABLES {
            return Err(format!("{at}: dotenv files cannot have more than {MAX_VARIABLES} variables"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        parse("build.env", text.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn key_value_lines() {
        let got = vars("IMAGE=busybox:1\n DEPLOY_URL = http://x/?a=b \nEMPTY=\nIMAGE=busybox:2\n").expect("parse");
        assert_eq!(
            got,
            [
                ("IMAGE".into(), "busybox:2".into()),
                ("DEPLOY_URL".into(), "http://x/?a=b".into()),
                ("EMPTY".into(), String::new())
            ]
        );
    }

    #[test]
    fn gitlab_limits_and_errors() {
        assert_eq!(
            vars("A=1\n\nB=2\n").expect_err("empty line"),
            "build.env:2: invalid format: expected KEY=VALUE (no empty lines or comments)"
        );
        assert!(vars("# comment\n").expect_err("comment").starts_with("build.env:1: invalid format"));
        assert!(vars("A-B=1\n").expect_err("name").contains("build.env:1: invalid variable name \"A-B\""));
        assert!(vars(&"A=1234567890\n".repeat(500)).expect_err("size").contains("more than 5120 bytes"));
        let many: String = (0..21).map(|i| format!("V{i}=x\n")).collect();
        assert!(vars(&many).expect_err("count").contains("build.env:21: dotenv files cannot have more than 20"));
        let twenty: String = (0..20).map(|i| format!("V{i}=x\n")).collect();
        assert_eq!(vars(&twenty).expect("20 is fine").len(), 20);
    }
}
