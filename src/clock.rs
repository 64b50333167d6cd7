//! "Now" for the server's behaviours that wait minutes or hours: when the server certificate is
//! re-issued (`tls`), when a cached tag is revalidated after `tag_ttl` (`registry::proxy`), when
//! a token has expired (`registry`, `registry::api::token`). Production reads the system clock.
//!
//! Tests move time instead of sleeping (issue 19, "tests without clocks"): the hidden, test-only
//! environment knob `GLCI_TEST_CLOCK_FILE=PATH`, read once by `glci serve`, names a file holding
//! a number of seconds added to the system clock; the test rewrites it to jump ahead. It is not a
//! user setting and is not in the README's configuration reference.
//!
//! Ground floor: no glci imports. Only the serving path takes a `Clock`; everything else (file
//! times, log stamps, the clean grace window) stays on the real clock.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The system clock, or the system clock plus the offset a test writes to a file.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_file: Option<PathBuf>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { offset_file: None }
    }

    /// The system clock plus the seconds written in `path` (none while it is missing or unreadable).
    pub fn offset_by_file(path: PathBuf) -> Clock {
        Clock { offset_file: Some(path) }
    }

    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.offset_file {
            None => now,
            Some(path) => now + std::fs::read_to_string(path).map(|text| parse_offset(&text)).unwrap_or_default(),
        }
    }
}

/// Seconds (`90`, `2.5`); anything else, negative or not finite counts as no offset.
fn parse_offset(text: &str) -> Duration {
    text.trim().parse::<f64>().ok().and_then(|secs| Duration::try_from_secs_f64(secs).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_seconds_and_bad_ones_count_as_none() {
        assert_eq!(parse_offset("90\n"), Duration::from_secs(90));
        assert_eq!(parse_offset("2.5"), Duration::from_millis(2500));
        for bad in ["", "-1", "NaN", "inf", "soon"] {
            assert_eq!(parse_offset(bad), Duration::ZERO, "{bad:?}");
        }
    }

    #[test]
    fn the_file_moves_the_clock_when_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        let clock = Clock::offset_by_file(path.clone());
        let real = SystemTime::now();
        assert!(clock.now().duration_since(real).unwrap_or_default() < Duration::from_secs(60), "no file, no offset");
        std::fs::write(&path, "3600").unwrap();
        let ahead = clock.now().duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600), "{ahead:?}");
    }
}
