//! The only writer to stdout: command output as text for people (tables, human sizes such as
//! `1.2 GiB`, ages such as `3 h ago`) or as `--json` (exact bytes, RFC 3339 times). Progress for
//! long operations goes to stderr, and only when stderr is a terminal, so pipes and `--json`
//! stay clean.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::CliError;
use crate::encoding::parse_rfc3339;
use crate::registry::gc::CleanReport;
use crate::registry::usage::{ListReport, OriginKind, StatsReport};

/// Writes command output to stdout; a closed pipe is not an error (like `glci config | head`).
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// One line `glci: <text>` on stderr: warnings and notes beside a command's output.
pub fn stderr_line(text: &str) {
    let _ = writeln!(std::io::stderr(), "glci: {text}");
}

/// Pretty JSON and a newline on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Failed(format!("cannot print JSON: {e}")))?;
    print_stdout(&format!("{text}\n"));
    Ok(())
}

/// `999 B`, `1.0 KiB`, `1.2 GiB`: binary units, one decimal, at most three digits before the
/// point (1010 KiB shows as `1.0 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `then` was, roughly: `just now`, `4 min ago`, `3 h ago`, `12 days ago`; older
/// than a year (or in the future) as the date.
pub fn age(now: SystemTime, then: SystemTime, rfc3339: &str) -> String {
    let Ok(elapsed) = now.duration_since(then) else { return rfc3339.get(..10).unwrap_or(rfc3339).to_string() };
    let secs = elapsed.as_secs();
    match secs {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        86_400..31_536_000 => {
            let days = secs / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
        _ => rfc3339.get(..10).unwrap_or(rfc3339).to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing blanks.
fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|(h, _)| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let (width, align) = (widths[i], headers[i].1);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if align == Align::Right {
                line.push_str(&" ".repeat(pad));
            }
            line.push_str(cell);
            if align == Align::Left {
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Escapes control characters in text that came from outside (repository names are
/// grammar-checked, upstream names came from config, but a terminal deserves care).
fn clean_text(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// `glci registry list` for people.
pub fn list_table(report: &ListReport, now: SystemTime) -> String {
    if report.images.is_empty() {
        return match &report.project {
            Some(project) => format!("no images under {project}\n"),
            None => "no images\n".to_string(),
        };
    }
    let rows: Vec<Vec<String>> = report
        .images
        .iter()
        .map(|image| {
            let short = image.digest.split_once(':').map_or(image.digest.as_str(), |(_, hex)| hex);
            let origin = match (image.origin, &image.upstream) {
                (OriginKind::Cached, Some(upstream)) => format!("cached from {}", clean_text(upstream)),
                (OriginKind::Cached, None) => "cached".to_string(),
                (OriginKind::Pushed, _) => "pushed".to_string(),
            };
            let updated = match parse_rfc3339(&image.updated_at) {
                Some(t) => age(now, t, &image.updated_at),
                None => image.updated_at.clone(),
            };
            vec![
                clean_text(&image.repository),
                image.tag.as_deref().map(clean_text).unwrap_or_else(|| "<none>".to_string()),
                short.get(..12).unwrap_or(short).to_string(),
                human_bytes(image.size),
                origin,
                updated,
            ]
        })
        .collect();
    let headers = [
        ("REPOSITORY", Align::Left),
        ("TAG", Align::Left),
        ("DIGEST", Align::Left),
        ("SIZE", Align::Right),
        ("ORIGIN", Align::Left),
        ("UPDATED", Align::Left),
    ];
    table(&headers, &rows)
}

/// `glci registry stats` for people.
pub fn stats_text(s: &StatsReport) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        vec!["repositories".into(), s.repositories.to_string()],
        vec!["tags".into(), s.tags.to_string()],
        vec!["manifests".into(), s.manifests.to_string()],
        vec!["blobs".into(), s.blobs.to_string()],
        vec!["content".into(), human_bytes(s.content_bytes)],
        vec!["  pushed".into(), human_bytes(s.pushed_bytes)],
        vec!["  cached".into(), human_bytes(s.cached_bytes)],
    ];
    for (upstream, bytes) in &s.cached_by_upstream {
        rows.push(vec![format!("    from {}", clean_text(upstream)), human_bytes(*bytes)]);
    }
    rows.push(vec!["  unreferenced".into(), human_bytes(s.unreferenced_bytes)]);
    rows.push(vec!["saved by dedup".into(), human_bytes(s.dedup_saved_bytes)]);
    rows.push(vec!["on disk".into(), human_bytes(s.disk_bytes)]);
    rows.push(vec!["upload sessions".into(), format!("{} ({})", s.upload_sessions, human_bytes(s.upload_bytes))]);
    if let Some(fs) = &s.filesystem {
        rows.push(vec![
            "free space".into(),
            format!("{} of {}", human_bytes(fs.free_bytes), human_bytes(fs.total_bytes)),
        ]);
    }
    // No header row: a two-column listing.
    let mut text = table(&[("", Align::Left), ("", Align::Left)], &rows);
    text.drain(..text.find('\n').map_or(0, |i| i + 1));
    text
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `glci registry clean` for people.
pub fn clean_text_report(r: &CleanReport) -> String {
    let (remove, delete, keep) =
        if r.dry_run { ("would remove", "would delete", "would keep") } else { ("removed", "deleted", "kept") };
    let mut out = format!(
        "{remove} {}, {} and {}",
        plural(r.tags_removed, "tag", "tags"),
        plural(r.manifests_removed, "manifest", "manifests"),
        plural(r.layer_links_removed, "layer link", "layer links")
    );
    let repos = &r.repositories_removed;
    if !repos.is_empty() {
        let shown: Vec<String> = repos.iter().take(5).map(|n| clean_text(n)).collect();
        let more = if repos.len() > 5 { format!(", … {} more", repos.len() - 5) } else { String::new() };
        out.push_str(&format!(
            "; {} {} ({}{more})",
            plural(repos.len() as u64, "repository", "repositories"),
            if r.dry_run { "would be gone" } else { "gone" },
            shown.join(", ")
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{delete} {}, reclaiming {}\n",
        plural(r.blobs_removed, "blob", "blobs"),
        human_bytes(r.bytes_reclaimed)
    ));
    let k = &r.kept;
    if k.tags + k.manifests > 0 {
        out.push_str(&format!(
            "{keep} {} and {} written while the clean ran\n",
            plural(k.tags, "tag", "tags"),
            plural(k.manifests, "manifest", "manifests"),
        ));
    }
    if k.layer_links + k.blobs > 0 {
        out.push_str(&format!(
            "{keep} {} and {} ({}) younger than the grace window ({}), for pushes in flight; --grace 0 removes them when nothing is pushing\n",
            plural(k.layer_links, "layer link", "layer links"),
            plural(k.blobs, "unreferenced blob", "unreferenced blobs"),
            human_bytes(k.bytes),
            crate::config::format_duration(Duration::from_secs(r.grace_seconds)),
        ));
    }
    if r.uploads_removed + r.temp_files_removed > 0 {
        out.push_str(&format!(
            "{remove} {} and {} left by crashed or abandoned pushes\n",
            plural(r.uploads_removed, "stale upload session", "stale upload sessions"),
            plural(r.temp_files_removed, "temp file", "temp files"),
        ));
    }
    if r.multipart_uploads_aborted > 0 {
        out.push_str(&format!(
            "{} {} left open by instances killed mid-push\n",
            if r.dry_run { "would abort" } else { "aborted" },
            plural(r.multipart_uploads_aborted, "multipart upload", "multipart uploads"),
        ));
    }
    if r.repaired > 0 {
        out.push_str(&format!("repaired {}\n", plural(r.repaired, "leftover", "leftovers")));
    }
    out
}

/// A one-line progress display on stderr, drawn only when stderr is a terminal.
pub struct Progress {
    enabled: bool,
    drawn: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn stderr() -> Progress {
        Progress { enabled: std::io::stderr().is_terminal(), drawn: false, last: None }
    }

    /// Redraws the line (at most ten times a second).
    pub fn update(&mut self, text: &str) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last = Some(Instant::now());
        self.drawn = true;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    /// Runs `work` while a line with `label` and the seconds elapsed is kept fresh.
    pub fn around<T>(label: &str, work: impl FnOnce() -> T) -> T {
        let mut progress = Progress::stderr();
        if !progress.enabled {
            return work();
        }
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let label = label.to_string();
        let ticker = std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                progress.update(&format!("{label}… {}s", start.elapsed().as_secs()));
                std::thread::park_timeout(Duration::from_millis(250));
            }
            progress.finish();
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        ticker.thread().unpark();
        let _ = ticker.join();
        result
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::usage::Image;
    use std::time::UNIX_EPOCH;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1023), "1.0 KiB");
        assert_eq!(human_bytes(1_035_114), "1.0 MiB");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_288_490_189), "1.2 GiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }

    #[test]
    fn ages() {
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let now = t(1_700_000_000);
        assert_eq!(age(now, t(1_700_000_000 - 5), "x"), "just now");
        assert_eq!(age(now, t(1_700_000_000 - 300), "x"), "5 min ago");
        assert_eq!(age(now, t(1_700_000_000 - 7200), "x"), "2 h ago");
        assert_eq!(age(now, t(1_700_000_000 - 86_400), "x"), "1 day ago");
        assert_eq!(age(now, t(1_000_000_000), "2001-09-09T01:46:40Z"), "2001-09-09");
    }

    #[test]
    fn list_table_aligns_columns() {
        let image = |repo: &str, tag: Option<&str>, size: u64, origin: OriginKind, upstream: Option<&str>| Image {
            repository: repo.into(),
            tag: tag.map(String::from),
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            media_type: "m".into(),
            size,
            origin,
            upstream: upstream.map(String::from),
            updated_at: "2023-11-14T22:13:20Z".into(),
        };
        let report = ListReport {
            project: None,
            images: vec![
                image("g/p/app", Some("latest"), 1_288_490_189, OriginKind::Pushed, None),
                image("library/alpine", None, 10, OriginKind::Cached, Some("registry-1.docker.io")),
            ],
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 600);
        let text = list_table(&report, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "REPOSITORY      TAG     DIGEST           SIZE  ORIGIN                            UPDATED"
        );
        assert_eq!(
            lines[1],
            "g/p/app         latest  0123456789ab  1.2 GiB  pushed                            10 min ago"
        );
        assert_eq!(
            lines[2],
            "library/alpine  <none>  0123456789ab     10 B  cached from registry-1.docker.io  10 min ago"
        );
        assert_eq!(list_table(&ListReport { project: Some("g".into()), images: vec![] }, now), "no images under g\n");
    }
}
