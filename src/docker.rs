//! The only code that spawns `docker` (DESIGN §2: the CLI through `std::process`, never a
//! Docker API crate). Typed calls; failures carry the command (secrets never in argv: they go
//! through stdin), the exit code and stderr.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::secret::Secret;

#[derive(Debug)]
pub struct DockerError {
    /// The command line, without secrets (they never are in argv).
    pub command: String,
    pub code: Option<i32>,
    pub stderr: String,
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
        let stderr = self.stderr.trim().lines().last().unwrap_or("");
        write!(f, "`{}` failed (exit {code}): {stderr}", self.command)
    }
}

impl std::error::Error for DockerError {}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String, DockerError> {
    let command = format!("docker {}", args.join(" "));
    let spawn_error = |e: std::io::Error| DockerError {
        command: command.clone(),
        code: None,
        stderr: format!("cannot run docker: {e} (is the docker CLI installed?)"),
    };
    let mut child = Command::new("docker")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Written then closed; a docker that exits early just makes this fail quietly.
        let _ = pipe.write_all(bytes);
    }
    // wait_with_output drains stdout and stderr together, so neither pipe can fill and block.
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(DockerError {
            command,
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// `docker login SERVER -u USER --password-stdin`.
pub fn login(server: &str, username: &str, password: &Secret) -> Result<(), DockerError> {
    run(&["login", server, "--username", username, "--password-stdin"], Some(password.expose().as_bytes())).map(|_| ())
}

/// `docker-credential-<helper> get`: the server name on stdin, `{"Username","Secret"}` out.
pub fn credential_helper_get(helper: &str, server: &str) -> Result<(String, Secret), DockerError> {
    let program = format!("docker-credential-{helper}");
    let failed = |stderr: String, code| DockerError { command: format!("{program} get"), code, stderr };
    if !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(failed("credential helper names are letters, digits, - and _".into(), None));
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string(), None))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| failed(e.to_string(), None))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).into_owned(), output.status.code()));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|_| failed("answer is not JSON".into(), None))?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(user), Some(secret)) => Ok((user.to_string(), Secret::new(secret.to_string()))),
        _ => Err(failed("answer lacks Username or Secret".into(), None)),
    }
}
