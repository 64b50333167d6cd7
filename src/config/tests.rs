//! Tests of loading, reading, validating and rendering `config.toml`.

use super::*;
use std::collections::HashMap;

const FILE: &str = "/home/u/.glci/config.toml";

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE), &env_of(&[]))
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config").join(case)
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.mock_server_port, 39741);
    assert_eq!(c.registry.upstreams, ["registry.gitlab.com", "registry-1.docker.io"]);
    assert_eq!(c.registry.tag_ttl, Duration::from_secs(600));
    assert!(!c.registry.push_through);
    assert!(c.registry.anonymous_pull);
    assert_eq!(c.registry.url, None);
    assert_eq!(c.registry.password, None);
    assert_eq!(c.registry.upstream.url, "registry.gitlab.com");
    assert!(c.registry.upstream_urls.is_empty());
    assert!(c.tls.extra_sans.is_empty());
    assert_eq!(c.tls.cert_validity, Duration::from_secs(24 * 3600));
    assert!(c.docker.privileged);
}

#[test]
fn gitlab_instance_and_token() {
    let c = Config::parse(
        "[gitlab]\nurl = \"https://gitlab.example.com/\"\ntoken = \"$GITLAB_TOKEN\"\n",
        Path::new(FILE),
        &env_of(&[("GITLAB_TOKEN", "glpat-secret")]),
    )
    .unwrap();
    assert_eq!(c.gitlab.url.as_deref(), Some("https://gitlab.example.com"));
    assert_eq!(c.gitlab.token.as_ref().map(|t| t.expose().to_string()).as_deref(), Some("glpat-secret"));
    assert!(!c.render_masked().contains("glpat-secret"), "{}", c.render_masked());
    assert!(c.render_masked().contains("[gitlab]"));
    assert!(!c.render_for_server().contains("glpat-secret"), "the server never gets the token");
    let e = parse_err("[gitlab]\nurl = \"gitlab.example.com\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "gitlab.url"));
    let e = parse_err("[gitlab]\ntoken = \"$NOPE\"\n");
    assert!(e.message.contains("NOPE is not set"), "{e}");
    let e = parse_err("[gitlab]\nprojects = {}\n");
    assert_eq!(e.key, "gitlab.projects");
}

#[test]
fn missing_file_gives_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(dir.path(), &env_of(&[])).unwrap();
    assert_eq!(c, Config::default());
    let c = Config::load(&dir.path().join("no-such-home"), &env_of(&[])).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn upstream_timeout_must_be_positive() {
    assert_eq!(parse("").unwrap().registry.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
    let e = parse_err("[registry]\nupstream_timeout = \"0s\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstream_timeout"), "{e}");
}

#[test]
fn unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(CONFIG_FILE)).unwrap();
    let e = Config::load(dir.path(), &env_of(&[])).unwrap_err();
    assert_eq!(e.file, dir.path().join(CONFIG_FILE));
    assert_eq!(e.line, None);
    assert!(e.message.starts_with("cannot read"), "{e}");
}

#[test]
fn every_key_parsed_from_fixture() {
    let env = env_of(&[("GLCI_TEST_REGISTRY_PASSWORD", "reg-secret"), ("GLCI_TEST_UPSTREAM_PASSWORD", "up-secret")]);
    let c = Config::load(&fixture("full"), &env).unwrap();
    assert_eq!(c.mock_server_port, 40000);
    let r = &c.registry;
    assert_eq!(r.url.as_deref(), Some("registry.example.com"));
    assert_eq!(r.username.as_deref(), Some("my-user"));
    assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("reg-secret"));
    assert!(r.push_through);
    assert_eq!(r.upstreams, ["registry-1.docker.io", "quay.io"]);
    assert_eq!(r.tag_ttl, Duration::from_secs(30));
    assert_eq!(r.upstream_timeout, Duration::from_secs(5));
    assert!(!r.anonymous_pull);
    assert_eq!(r.upstream_urls["registry-1.docker.io"], "http://127.0.0.1:5001");
    assert_eq!(r.upstream_urls["quay.io"], "https://mirror.example.com/quay");
    assert_eq!(r.upstream.url, "gitlab.example.com");
    assert_eq!(r.upstream.username.as_deref(), Some("deploy-token"));
    assert_eq!(r.upstream.password.as_ref().map(|p| p.expose()), Some("up-secret"));
    assert_eq!(
        c.tls.extra_sans,
        [
            San::Dns("my-custom-host".into()),
            San::Ip("192.168.1.100".parse().unwrap()),
            San::Ip("::1".parse().unwrap()),
            San::Dns("*.dev.example.com".into()),
        ]
    );
    assert_eq!(c.tls.cert_validity, Duration::from_secs(7 * 86400));
    assert!(!c.docker.privileged);
}

#[test]
fn comma_string_upstreams() {
    let c = Config::load(&fixture("comma-upstreams"), &env_of(&[])).unwrap();
    assert_eq!(c.registry.upstreams, ["registry.gitlab.com", "registry-1.docker.io", "quay.io"]);
    let c = parse("[registry]\nupstreams = \"a.example, ,b.example:5000,\"").unwrap();
    assert_eq!(c.registry.upstreams, ["a.example", "b.example:5000"]);
    let c = parse("[registry]\nupstreams = []").unwrap();
    assert!(c.registry.upstreams.is_empty());
}

#[test]
fn dotted_and_inline_tables() {
    let c = parse("registry.push_through = true\n[registry.upstream]\nurl = \"x.example\"").unwrap();
    assert!(c.registry.push_through);
    assert_eq!(c.registry.upstream.url, "x.example");
    let c = parse("docker = { privileged = false }").unwrap();
    assert!(!c.docker.privileged);
}

#[test]
fn env_references_resolved() {
    let env = env_of(&[
        ("PW", "p1"),
        ("UP_PW", "p2"),
        ("UPS", "a.example,b.example"),
        ("TTL", "5m"),
        ("PORT", "40001"),
        ("PUSH", "true"),
        ("SAN", "10.0.0.1"),
    ]);
    let text = r#"
mock_server_port = "$PORT"
[registry]
password = "$PW"
upstreams = "${UPS}"
tag_ttl = "${TTL}"
push_through = "$PUSH"
[registry.upstream]
password = "${UP_PW}"
[tls]
extra_sans = ["$SAN"]
"#;
    let c = Config::parse(text, Path::new(FILE), &env).unwrap();
    assert_eq!(c.mock_server_port, 40001);
    assert_eq!(c.registry.password, Some(Secret::from("p1")));
    assert_eq!(c.registry.upstream.password, Some(Secret::from("p2")));
    assert_eq!(c.registry.upstreams, ["a.example", "b.example"]);
    assert_eq!(c.registry.tag_ttl, Duration::from_secs(300));
    assert!(c.registry.push_through);
    assert_eq!(c.tls.extra_sans, [San::Ip("10.0.0.1".parse().unwrap())]);
}

#[test]
fn strings_that_are_not_whole_references_stay_literal() {
    for literal in ["pa$$word", "$", "${}", "$1abc", "${A", "x$A", "$A-B", "${A}x"] {
        let text = format!("[registry]\npassword = {literal:?}");
        let c = parse(&text).unwrap();
        assert_eq!(c.registry.password.as_ref().map(|p| p.expose()), Some(literal));
    }
}

#[test]
fn unset_variable_names_variable_file_line_and_key() {
    let e = parse("[registry]\nurl = \"r.example\"\npassword = \"$REGISTRY_PASSWORD\"\n").unwrap_err();
    assert_eq!(e.file, Path::new(FILE));
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key, "registry.password");
    assert_eq!(
        e.to_string(),
        "/home/u/.glci/config.toml:3: registry.password: \
         environment variable REGISTRY_PASSWORD is not set"
    );
    let e = parse_err("[tls]\nextra_sans = [\n  \"a.example\",\n  \"${NOPE}\",\n]");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "tls.extra_sans[1]"));
    assert!(e.message.contains("NOPE"), "{e}");
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse_err("mock_server_port = 1\n[registry]\nbogus = 1\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "registry.bogus"));
    assert!(e.message.starts_with("unknown key"), "{e}");
    assert!(e.message.contains("push_through"), "{e}");

    let e = Config::load(&fixture("unknown-key"), &env_of(&[])).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(5), "registry.push_thorugh"));
    assert!(e.to_string().contains("unknown-key/config.toml:5: registry.push_thorugh: "), "{e}");

    let cases = [
        ("[bogus]\nx = 1", 1, "bogus"),
        ("\n\n[registry.upstream]\nurl = \"u\"\ntoken = \"t\"", 5, "registry.upstream.token"),
        ("[tls]\nsans = []", 2, "tls.sans"),
        ("[docker]\n\"odd key\" = true", 2, "docker.\"odd key\""),
        ("registry = { url = \"u\", nope = 1 }", 1, "registry.nope"),
    ];
    for (text, line, key) in cases {
        let e = parse_err(text);
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text:?}: {e}");
    }
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = parse_err("[registry]\n\npush_through = \"yes\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "registry.push_through"));
    assert_eq!(e.message, "expected a boolean (true or false), found a string");

    let cases = [
        ("registry = 5", 1, "registry"),
        ("mock_server_port = \"39741\"", 1, "mock_server_port"),
        ("mock_server_port = 1.5", 1, "mock_server_port"),
        ("[registry]\nusername = 7", 2, "registry.username"),
        ("[registry]\nupstreams = 3", 2, "registry.upstreams"),
        ("[registry]\nupstreams = [\"a\",\n 3]", 3, "registry.upstreams[1]"),
        ("[registry]\ntag_ttl = 600", 2, "registry.tag_ttl"),
        ("[registry.upstream_urls]\nx = true", 2, "registry.upstream_urls.x"),
        ("[tls]\nextra_sans = \"a.example\"", 2, "tls.extra_sans"),
        ("[docker]\nprivileged = 1", 2, "docker.privileged"),
    ];
    for (text, line, key) in cases {
        let e = parse_err(text);
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text:?}: {e}");
        assert!(e.message.starts_with("expected "), "{e}");
    }
}

#[test]
fn env_value_of_wrong_form_for_bool_or_port() {
    let env = env_of(&[("V", "yes")]);
    let e = Config::parse("[docker]\nprivileged = \"$V\"", Path::new(FILE), &env).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "docker.privileged"));
    let e = Config::parse("mock_server_port = \"$V\"", Path::new(FILE), &env).unwrap_err();
    assert_eq!(e.key, "mock_server_port");
}

#[test]
fn port_out_of_range() {
    for text in ["mock_server_port = 0", "mock_server_port = 65536", "mock_server_port = -1"] {
        let e = parse_err(text);
        assert_eq!((e.line, e.key.as_str()), (Some(1), "mock_server_port"));
        assert!(e.message.contains("out of range"), "{e}");
    }
    assert_eq!(parse("mock_server_port = 65535").unwrap().mock_server_port, 65535);
}

#[test]
fn bad_duration() {
    let e = parse_err("[registry]\nurl = \"r\"\ntag_ttl = \"abc\"");
    assert_eq!(
        e.to_string(),
        "/home/u/.glci/config.toml:3: registry.tag_ttl: \
         invalid duration \"abc\" (use forms like 30m, 48h, 7d)"
    );
    let e = parse_err("[tls]\ncert_validity = \"0h\"");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "tls.cert_validity"));
}

#[test]
fn bad_upstream_url() {
    let e = parse_err("[registry.upstream_urls]\n\"registry-1.docker.io\" = \"127.0.0.1:5001\"");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstream_urls.\"registry-1.docker.io\""));
    assert!(e.message.contains("http:// or https://"), "{e}");
    for bad in ["ftp://x", "http://", "https:///path", "http://a b"] {
        let text = format!("[registry.upstream_urls]\nh = {bad:?}");
        assert!(parse(&text).is_err(), "{bad}");
    }
}

#[test]
fn bad_upstream_host() {
    let e = parse_err("[registry]\nupstreams = \"registry.gitlab.com,https://quay.io\"");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstreams"));
    assert!(e.message.contains("upstream_urls"), "{e}");
    let e = parse_err("[registry]\nupstreams = [\n\"a\",\n\"b/c\"]");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "registry.upstreams[1]"));
}

#[test]
fn bad_san() {
    let e = parse_err("[tls]\nextra_sans = [\n  \"ok.example\",\n  \"not a host\",\n]");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "tls.extra_sans[1]"));
    assert!(e.message.starts_with("invalid SAN \"not a host\""), "{e}");
}

#[test]
fn san_grammar() {
    for ok in ["a", "my-custom-host", "a.b.example", "*.example.com", "x1.io", "127.0.0.1", "fe80::1"] {
        assert!(ok.parse::<San>().is_ok(), "{ok}");
    }
    let long_label = "a".repeat(64);
    let long_name = ["a"; 128].join("."); // 255 characters
    for bad in [
        "",
        ".",
        "a..b",
        "-a",
        "a-",
        "a_b",
        "a b",
        "*.",
        "*",
        "a.*.b",
        "10.0.0.300",
        "[::1]",
        "http://a",
        "a.",
        &long_label,
        &long_name,
    ] {
        assert!(bad.parse::<San>().is_err(), "{bad:?}");
    }
}

#[test]
fn syntax_errors_are_one_line_with_a_line_number() {
    let e = parse_err("[registry]\nurl = \"a\"\n[registry]\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.starts_with("invalid TOML: "), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    let e = parse_err("a = \n");
    assert_eq!(e.line, Some(1));
    let e = parse_err("[registry]\ntag_ttl = 1979-05-27\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("dates and times"), "{e}");
}

#[test]
fn error_without_line_or_key() {
    let e = ConfigError {
        file: PathBuf::from("/x/config.toml"),
        line: None,
        key: String::new(),
        message: "cannot read: denied".into(),
    };
    assert_eq!(e.to_string(), "/x/config.toml: cannot read: denied");
}

#[test]
fn parse_duration_forms() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
    assert_eq!(parse_duration("007m"), Ok(Duration::from_secs(420)));
    for bad in [
        "",
        "0s",
        "0d",
        "10",
        "m",
        "10x",
        "1.5h",
        "-1m",
        "+1m",
        " 10m",
        "10m ",
        "10 m",
        "1h30m",
        "10M",
        "abc",
        "99999999999999999999s",
        "999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_duration("abc"), Err("invalid duration \"abc\" (use forms like 30m, 48h, 7d)".to_owned()));
}

#[test]
fn format_duration_round_trips() {
    for (text, shown) in [("30s", "30s"), ("90s", "90s"), ("10m", "10m"), ("120m", "2h"), ("1d", "24h"), ("7d", "168h")]
    {
        let d = parse_duration(text).unwrap();
        assert_eq!(format_duration(d), shown);
        assert_eq!(parse_duration(shown), Ok(d));
    }
}

#[test]
fn glci_home_from_env() {
    assert_eq!(glci_home(&env_of(&[("GLCI_HOME", "/g"), ("HOME", "/h")])), PathBuf::from("/g"));
    assert_eq!(glci_home(&env_of(&[("HOME", "/h")])), PathBuf::from("/h/.glci"));
    assert_eq!(glci_home(&env_of(&[("GLCI_HOME", ""), ("HOME", "/h")])), PathBuf::from("/h/.glci"));
    assert_eq!(glci_home(&env_of(&[])), PathBuf::from(".glci"));
    assert_eq!(config_path(Path::new("/g")), PathBuf::from("/g/config.toml"));
}

#[test]
fn masked_rendering_never_shows_passwords() {
    let env = env_of(&[("GLCI_TEST_REGISTRY_PASSWORD", "reg-secret"), ("GLCI_TEST_UPSTREAM_PASSWORD", "up-secret")]);
    let c = Config::load(&fixture("full"), &env).unwrap();
    let text = c.render_masked();
    assert!(!text.contains("reg-secret") && !text.contains("up-secret"), "{text}");
    assert_eq!(text.matches("password = \"***\"").count(), 2, "{text}");
    // The rendering is itself a valid config with the same values.
    let back = parse(&text).unwrap();
    assert_eq!(back.registry.password, Some(Secret::from("***")));
    let mut expected = c.clone();
    expected.registry.password = Some(Secret::from("***"));
    expected.registry.upstream.password = Some(Secret::from("***"));
    assert_eq!(back, expected);
}

#[test]
fn masked_rendering_of_defaults() {
    let text = Config::default().render_masked();
    assert!(!text.contains("password"), "{text}");
    assert!(text.contains("[registry]\npush_through = false\n"), "no url/username: {text}");
    assert!(text.contains("mock_server_port = 39741"), "{text}");
    assert!(text.contains("upstreams = [\"registry.gitlab.com\", \"registry-1.docker.io\"]"), "{text}");
    assert!(text.contains("tag_ttl = \"10m\""), "{text}");
    assert!(text.contains("cert_validity = \"24h\""), "{text}");
    assert!(text.contains("privileged = true"), "{text}");
    assert_eq!(parse(&text).unwrap(), Config::default());
}

#[test]
fn masked_rendering_normalises_comma_upstreams() {
    let c = Config::load(&fixture("comma-upstreams"), &env_of(&[])).unwrap();
    let text = c.render_masked();
    assert!(text.contains("upstreams = [\"registry.gitlab.com\", \"registry-1.docker.io\", \"quay.io\"]"), "{text}");
}

#[test]
fn storage_on_s3_with_secret_references_masked_when_rendered() {
    let text = "[storage]\nurl = \"s3://team-registry/ci\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:8333/\"\n\
                region = \"eu-1\"\naccess_key_id = \"$S3_KEY\"\nsecret_access_key = \"${S3_SECRET}\"\npath_style = false\nredirect = true\n";
    let env = env_of(&[("S3_KEY", "id"), ("S3_SECRET", "very-secret")]);
    let c = Config::parse(text, Path::new(FILE), &env).unwrap();
    assert_eq!(c.storage.url.as_deref(), Some("s3://team-registry/ci"));
    let s3 = &c.storage.s3;
    assert_eq!((s3.endpoint.as_deref(), s3.region.as_deref()), (Some("http://127.0.0.1:8333"), Some("eu-1")));
    assert_eq!(
        (s3.access_key_id.clone(), s3.secret_access_key.clone()),
        (Some("id".into()), Some("very-secret".into()))
    );
    assert_eq!((s3.path_style, s3.redirect), (Some(false), true));
    let shown = c.render_masked();
    assert!(shown.contains("[storage.s3]") && shown.contains("secret_access_key = \"***\""), "{shown}");
    assert!(!shown.contains("very-secret"));
    // The mock's copy never carries the store's keys.
    assert!(!c.render_for_server().contains("very-secret"));
    assert!(!parse("").unwrap().render_masked().contains("storage"));
}

#[test]
fn storage_keys_are_checked() {
    let e = parse_err("[storage.s3]\nendpoint = \"ftp://x\"\n");
    assert_eq!((e.key.as_str(), e.line), ("storage.s3.endpoint", Some(2)));
    let e = parse_err("[storage.s3]\nbucket = \"b\"\n");
    assert_eq!(e.key, "storage.s3.bucket");
    assert_eq!(parse_err("[storage]\npath = \"/x\"\n").key, "storage.path");
}

#[test]
fn gitlab_projects_map_paths_to_checkouts() {
    let c = Config::parse(
        "[gitlab.projects]\n\"group/deployer\" = \"../deployer\"\n\"g/abs\" = \"/srv/abs\"\n",
        Path::new("/home/u/.glci/config.toml"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.gitlab.projects["group/deployer"], Path::new("/home/u/.glci/../deployer"));
    assert_eq!(c.gitlab.projects["g/abs"], Path::new("/srv/abs"));
    assert!(c.render_masked().contains("[gitlab.projects]"), "{}", c.render_masked());
    let e = Config::parse("[gitlab.projects]\n\"/bad\" = \"x\"\n", Path::new("c.toml"), &|_| None).unwrap_err();
    assert_eq!(e.to_string(), "c.toml:2: gitlab.projects.\"/bad\": \"/bad\" is not a project path (group/project)");
}
