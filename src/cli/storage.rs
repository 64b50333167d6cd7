//! Where `glci serve` keeps the registry: a directory (the default, `$GLCI_HOME/registry`) or
//! an S3 bucket (`--storage s3://BUCKET[/PREFIX]`, or `[storage] url`), with the S3 settings
//! from `[storage.s3]` and the AWS environment variables as the fallback.

use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::config::S3Config;
use crate::registry::s3::{self, S3Settings};
use crate::secret::Secret;

/// The storage `glci serve` was asked for.
#[derive(Debug, PartialEq)]
pub enum StorageChoice {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// `--storage` wins over `[storage] url`; neither means the directory under `home`.
pub fn choose(flag: Option<&str>, configured: Option<&str>, home: &std::path::Path) -> Result<StorageChoice, CliError> {
    let (value, source) = match (flag, configured) {
        (Some(f), _) => (f, "--storage"),
        (None, Some(c)) => (c, "[storage] url"),
        (None, None) => return Ok(StorageChoice::Directory(home.join("registry"))),
    };
    match s3::parse_url(value) {
        Some(Ok((bucket, prefix))) => Ok(StorageChoice::S3 { bucket, prefix }),
        Some(Err(message)) => Err(CliError::Usage(format!("{source}: {message}"))),
        None if value.contains("://") => Err(CliError::Usage(format!(
            "{source}: {value:?}: only directories and s3://BUCKET[/PREFIX] are supported"
        ))),
        None => Ok(StorageChoice::Directory(PathBuf::from(value))),
    }
}

/// The S3 settings: `[storage.s3]` first, then `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`,
/// `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
/// Without an endpoint the bucket is on AWS in its region.
pub fn s3_settings(bucket: &str, options: &S3Config, env: &dyn Fn(&str) -> Option<String>) -> S3Settings {
    let env_any = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
    let region = options
        .region
        .clone()
        .or_else(|| env_any(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
        .unwrap_or_else(|| "us-east-1".to_string());
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| env_any(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    S3Settings {
        endpoint,
        region,
        bucket: bucket.to_string(),
        access_key_id: options.access_key_id.clone().or_else(|| env_any(&["AWS_ACCESS_KEY_ID"]).map(Secret::new)),
        secret_access_key: options
            .secret_access_key
            .clone()
            .or_else(|| env_any(&["AWS_SECRET_ACCESS_KEY"]).map(Secret::new)),
        // Path style works with every S3-compatible store (and still with AWS).
        path_style: options.path_style.unwrap_or(true),
    }
}

/// How long a redirect's presigned URL stays valid (distribution's default is 20 minutes).
pub const REDIRECT_VALID_FOR: Duration = Duration::from_secs(20 * 60);

/// Opens the registry's backend on S3; a bucket that cannot be used is an error now (exit 1).
pub fn open_s3(
    bucket: &str,
    prefix: &str,
    options: &S3Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(s3::S3Store, s3::S3Uploads), CliError> {
    let settings = s3_settings(bucket, options, env);
    let redirect = options.redirect.then_some(REDIRECT_VALID_FOR);
    s3::open(&settings, prefix, redirect).map_err(|e| {
        CliError::Failed(format!("cannot use storage s3://{bucket}/{prefix} at {}: {e}", settings.endpoint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_directories_stay_the_default() {
        let home = std::path::Path::new("/h");
        assert_eq!(choose(None, None, home).unwrap(), StorageChoice::Directory("/h/registry".into()));
        assert_eq!(choose(Some("/d"), Some("s3://bkt"), home).unwrap(), StorageChoice::Directory("/d".into()));
        assert_eq!(
            choose(None, Some("s3://bkt/p/q"), home).unwrap(),
            StorageChoice::S3 { bucket: "bkt".into(), prefix: "p/q".into() }
        );
        let CliError::Usage(message) = choose(Some("gs://x"), None, home).unwrap_err() else { panic!() };
        assert!(message.starts_with("--storage: "), "{message}");
        assert!(
            matches!(choose(None, Some("s3://A"), home), Err(CliError::Usage(m)) if m.starts_with("[storage] url"))
        );
    }

    #[test]
    fn settings_fall_back_to_the_aws_environment() {
        let env = |name: &str| match name {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
            "AWS_DEFAULT_REGION" => Some("eu-west-1".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("id".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let s = s3_settings("b", &S3Config::default(), &env);
        assert_eq!(
            (s.endpoint.as_str(), s.region.as_str(), s.path_style),
            ("http://127.0.0.1:9000", "eu-west-1", true)
        );
        assert_eq!(s.access_key_id, Some(Secret::from("id")));
        let configured = S3Config {
            region: Some("r".into()),
            access_key_id: Some(Secret::from("mine")),
            path_style: Some(false),
            ..S3Config::default()
        };
        let s = s3_settings("b", &configured, &|_| None);
        assert_eq!((s.endpoint.as_str(), s.path_style), ("https://s3.r.amazonaws.com", false));
        assert_eq!((s.access_key_id, s.secret_access_key), (Some(Secret::from("mine")), None));
    }
}
