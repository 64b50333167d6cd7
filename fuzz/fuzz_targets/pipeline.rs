//! The `.gitlab-ci.yml` parser (`pipeline::parse::parse_with`: YAML, anchors, `include:
//! local`, `extends`, `!reference`, jobs, `rules: if`), read from memory. Input: the main
//! file, then optionally a NUL byte and the text every included file has. Invariants: no
//! panic (nor runaway recursion); an accepted pipeline is consistent: unique visible job
//! names, every stage declared, `.pre` first and `.post` last, `needs` naming jobs.

#![no_main]

use std::io;
use std::path::Path;

use glci::pipeline::parse::parse_with;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (main, included) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(main) = std::str::from_utf8(main) else { return };
    let included = included.map(String::from_utf8_lossy);
    let read = |path: &Path| -> io::Result<String> {
        match &included {
            Some(text) if path.starts_with("/project") => Ok(text.to_string()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    };
    let pipeline = match parse_with(main, Path::new("/project/.gitlab-ci.yml"), &read) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(pipeline.stages.first().map(String::as_str), Some(".pre"));
    assert_eq!(pipeline.stages.last().map(String::as_str), Some(".post"));
    for (i, job) in pipeline.jobs.iter().enumerate() {
        assert!(!job.name.starts_with('.'), "hidden job {:?} is visible", job.name);
        assert!(pipeline.jobs[..i].iter().all(|j| j.name != job.name), "duplicate job {:?}", job.name);
        assert!(pipeline.stages.contains(&job.stage), "job {:?} in undeclared stage {:?}", job.name, job.stage);
        for need in job.needs.iter().flatten() {
            assert!(need.optional || pipeline.job(&need.job).is_some(), "{:?} needs {:?}", job.name, need.job);
        }
        assert!(job.retry <= 2);
    }
});
