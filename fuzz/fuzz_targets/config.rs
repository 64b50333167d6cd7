//! `config.toml` (`config::Config::parse`, with `"$NAME"` references). Invariants: no panic;
//! an accepted config renders (masked and for the server), and what it renders for the
//! server parses back to the same configuration.

#![no_main]

use std::path::Path;

use glci::config::Config;
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "USER" => Some("fuzz".to_string()),
        "UPSTREAM_PASSWORD" => Some("s3cret".to_string()),
        "EMPTY" => Some(String::new()),
        _ if name.starts_with("GLCI_TEST_") => Some(format!("value of {name}")),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("/fuzz/config.toml");
    let config = match Config::parse(text, file, &env) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.file, file);
            let _ = e.to_string();
            return;
        }
    };
    let _ = config.render_masked();
    let rendered = config.render_for_server();
    let mut expected = config.clone();
    expected.registry.url = None;
    expected.registry.username = None;
    expected.registry.password = None;
    // A resolved secret that itself looks like a reference would be read as one again.
    if rendered.contains('$') {
        return;
    }
    match Config::parse(&rendered, file, &|_| None) {
        Ok(again) => assert_eq!(again, expected, "{rendered}"),
        Err(e) => panic!("rendered config does not parse: {e}\n{rendered}"),
    }
});
