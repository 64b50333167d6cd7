//! GitLab's human durations (`timeout: 1h 30m`, `10 minutes`, `3600`), as its ChronicDuration
//! reads them. Pure; `read::timeout` calls it.

use std::time::Duration;

/// GitLab's human durations (ChronicDuration): `3600` (seconds), `1h 30m`, `1h30m`,
/// `10 minutes`, `2 days and 3 hours`, `1.5h`, `1:30:00`. Months are 30 days, years 365.25.
pub fn parse_human(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (use forms like \"1h 30m\", \"10 minutes\" or \"3600\")");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid());
    }
    if trimmed.contains(':') {
        let parts: Vec<&str> = trimmed.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return Err(invalid());
        }
        let mut seconds: u64 = 0;
        for part in parts {
            let n: u64 = part.parse().map_err(|_| invalid())?;
            seconds = seconds.checked_mul(60).and_then(|s| s.checked_add(n)).ok_or_else(invalid)?;
        }
        return Ok(Duration::from_secs(seconds));
    }
    let lowered = trimmed.to_ascii_lowercase();
    let mut rest = lowered.as_str();
    let mut total = 0f64;
    let mut any = false;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if let Some(after) = rest.strip_prefix("and ") {
            rest = after;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mon" | "mos" | "month" | "months" => 30.0 * 86_400.0,
            "y" | "yr" | "yrs" | "year" | "years" => 365.25 * 86_400.0,
            other => return Err(format!("{}: unknown unit {other:?}", invalid())),
        };
        total += number * scale;
        any = true;
    }
    if !any || !total.is_finite() || total > 1e12 {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(total.round()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases: &[(&str, u64)] = &[
            ("3600", 3600),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("10 minutes", 600),
            ("1 minute", 60),
            ("2 hours", 7200),
            ("1 hour and 5 minutes", 3900),
            ("1 day, 2 hours", 93_600),
            ("3 weeks", 3 * 604_800),
            ("1 mo", 30 * 86_400),
            ("1 year", 31_557_600),
            ("1.5h", 5400),
            ("90s", 90),
            ("45 sec", 45),
            ("2 hrs", 7200),
            ("1h 30", 3630),
            ("1:30:00", 5400),
            ("10:00", 600),
            ("  10m  ", 600),
            ("1H", 3600),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_human(text), Ok(Duration::from_secs(*secs)), "{text:?}");
        }
        for bad in ["", "  ", "h", "10 minuets", "1h x", "1::2", "1:2:3:4", "a:b", "1..5h", "-1h", "1e400"] {
            assert!(parse_human(bad).is_err(), "{bad:?}");
        }
        assert!(parse_human("10 minuets").unwrap_err().contains("unknown unit \"minuets\""));
    }
}
