//! The configuration rendered back as TOML: the masked form `glci config` prints and the
//! server's copy written into the `glci-mock` container.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{format_duration, Config, GitlabConfig, San, StorageConfig};
use crate::secret::{Secret, MASK};

impl Config {
    /// The effective configuration as TOML, defaults filled in, passwords `"***"`
    /// (omitted when unset), durations in their shortest exact form.
    pub fn render_masked(&self) -> String {
        self.render(true)
    }

    /// The configuration `glci serve` needs inside the `glci-mock` container: like
    /// [`Config::render_masked`] but with the upstream password itself (resolved from its
    /// `"$VAR"` here, on the host) and without the external-registry keys. Holds a secret:
    /// written only into the container (mode 0600), never to the host's disk or a log.
    pub fn render_for_server(&self) -> String {
        let mut server = self.clone();
        server.registry.url = None;
        server.registry.username = None;
        server.registry.password = None;
        // The server never fetches includes: the instance token stays on the host.
        server.gitlab = GitlabConfig::default();
        // The mock's registry keeps its own storage; the S3 keys stay on the host.
        server.storage = StorageConfig::default();
        server.render(false)
    }

    fn render(&self, masked: bool) -> String {
        let secret = |s: &'_ Option<Secret>| -> Option<String> {
            s.as_ref().map(|p| if masked { MASK.to_string() } else { p.expose().to_string() })
        };
        let r = &self.registry;
        let view = RenderConfig {
            mock_server_port: self.mock_server_port,
            registry: RenderRegistry {
                url: r.url.as_deref(),
                username: r.username.as_deref(),
                password: secret(&r.password),
                push_through: r.push_through,
                upstreams: &r.upstreams,
                tag_ttl: format_duration(r.tag_ttl),
                upstream_timeout: format_duration(r.upstream_timeout),
                anonymous_pull: r.anonymous_pull,
                upstream_urls: &r.upstream_urls,
                upstream: RenderUpstream {
                    url: &r.upstream.url,
                    username: r.upstream.username.as_deref(),
                    password: secret(&r.upstream.password),
                },
            },
            tls: RenderTls {
                extra_sans: self.tls.extra_sans.iter().map(San::to_string).collect(),
                cert_validity: format_duration(self.tls.cert_validity),
            },
            docker: RenderDocker { privileged: self.docker.privileged },
            gitlab: RenderGitlab {
                url: self.gitlab.url.as_deref(),
                token: secret(&self.gitlab.token),
                projects: self.gitlab.projects.iter().map(|(p, d)| (p.clone(), d.display().to_string())).collect(),
            },
            run: RenderRun { default_image: self.run.default_image.as_deref() },
            storage: (self.storage != StorageConfig::default()).then(|| {
                let s3 = &self.storage.s3;
                RenderStorage {
                    url: self.storage.url.as_deref(),
                    s3: RenderS3 {
                        endpoint: s3.endpoint.as_deref(),
                        region: s3.region.as_deref(),
                        access_key_id: secret(&s3.access_key_id),
                        secret_access_key: secret(&s3.secret_access_key),
                        path_style: s3.path_style,
                        redirect: s3.redirect,
                    },
                }
            }),
        };
        toml::to_string(&view).expect("strings, integers, booleans and string maps always serialize to TOML")
    }
}

#[derive(Serialize)]
struct RenderConfig<'a> {
    mock_server_port: u16,
    registry: RenderRegistry<'a>,
    tls: RenderTls,
    docker: RenderDocker,
    gitlab: RenderGitlab<'a>,
    run: RenderRun<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<RenderStorage<'a>>,
}

#[derive(Serialize)]
struct RenderStorage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    s3: RenderS3<'a>,
}

#[derive(Serialize)]
struct RenderS3<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_style: Option<bool>,
    redirect: bool,
}

#[derive(Serialize)]
struct RenderGitlab<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    projects: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RenderRegistry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    push_through: bool,
    upstreams: &'a [String],
    tag_ttl: String,
    upstream_timeout: String,
    anonymous_pull: bool,
    upstream_urls: &'a BTreeMap<String, String>,
    upstream: RenderUpstream<'a>,
}

#[derive(Serialize)]
struct RenderUpstream<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

#[derive(Serialize)]
struct RenderTls {
    extra_sans: Vec<String>,
    cert_validity: String,
}

#[derive(Serialize)]
struct RenderDocker {
    privileged: bool,
}

#[derive(Serialize)]
struct RenderRun<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    default_image: Option<&'a str>,
}
