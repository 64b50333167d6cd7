//! The glci CA and the server certificate (DESIGN §9). The CA is created once under
//! `$GLCI_HOME/registry-ca/` (`ca.crt`, `ca.key` mode 0600) and reused; the server certificate
//! is issued by it for the built-in names plus `[tls] extra_sans`, valid `[tls] cert_validity`,
//! and re-issued in place once two thirds of its life have passed: new connections get the new
//! certificate, no restart needed.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::clock::Clock;
use crate::config::San;

/// Names every server certificate carries (DESIGN §9).
pub const BUILTIN_SANS: [&str; 5] = ["glci-mock", "localhost", "127.0.0.1", "::1", "host.docker.internal"];
const CA_COMMON_NAME: &str = "glci registry CA";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug)]
pub enum TlsError {
    Io { path: PathBuf, source: io::Error },
    Cert(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TlsError::Cert(m) => write!(f, "certificate: {m}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn cert_err(e: impl fmt::Display) -> TlsError {
    TlsError::Cert(e.to_string())
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

pub fn ca_dir(home: &Path) -> PathBuf {
    home.join("registry-ca")
}

pub fn ca_cert_path(home: &Path) -> PathBuf {
    ca_dir(home).join("ca.crt")
}

/// The CA: its key and a certificate object to sign with.
pub struct Ca {
    key: KeyPair,
    cert: Certificate,
    pem: String,
}

impl Ca {
    /// Loads the CA from `$GLCI_HOME/registry-ca/`, creating it the first time.
    pub fn load_or_create(home: &Path) -> Result<Ca, TlsError> {
        let dir = ca_dir(home);
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !key_path.exists() {
            create_ca(&dir)?;
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io_at(&key_path))?;
        let pem = fs::read_to_string(&cert_path).map_err(io_at(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        // Signing needs only the CA's name and key: rebuild the certificate object from them.
        let cert = ca_params().self_signed(&key).map_err(cert_err)?;
        Ok(Ca { key, cert, pem })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a server certificate for `sans`, valid from now for `validity`.
    fn issue(
        &self,
        sans: &[San],
        validity: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "glci-mock");
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san {
                San::Dns(name) => name.clone().try_into().map(SanType::DnsName).map_err(cert_err),
                San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::try_from(validity).map_err(cert_err)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(cert_err)?;
        // The leaf only: clients hold the CA (ca.crt); the CA object here is rebuilt from its key
        // and name, so sending it would put a second certificate with the same serial on the wire.
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "glci");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::try_from(CA_VALIDITY).unwrap_or(time::Duration::days(3650));
    params
}

/// Writes a new CA into a temp directory and renames it into place, so two processes
/// starting at once cannot end up with one's key and the other's certificate.
fn create_ca(dir: &Path) -> Result<(), TlsError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    let temp = parent.join(format!(".registry-ca.tmp-{}", crate::durable::new_id()));
    fs::create_dir(&temp).map_err(io_at(&temp))?;
    let result = (|| {
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).map_err(io_at(&temp))?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params().self_signed(&key).map_err(cert_err)?;
        write_file(&temp.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&temp.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
        match fs::rename(&temp, dir) {
            Ok(()) => Ok(()),
            // Someone else created it first: theirs wins.
            Err(_) if dir.join("ca.key").exists() => Ok(()),
            Err(e) => Err(TlsError::Io { path: dir.to_path_buf(), source: e }),
        }
    })();
    let _ = fs::remove_dir_all(&temp);
    result
}

/// `durable::create_new`, its error naming the file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::durable::create_new(path, contents, mode).map_err(io_at(path))
}

struct Current {
    config: Arc<ServerConfig>,
    renew_at: SystemTime,
}

/// The server side of TLS: the current rustls config, re-issued before the certificate expires.
pub struct ServerTls {
    ca: Ca,
    sans: Vec<San>,
    validity: Duration,
    current: RwLock<Current>,
    /// When renewal is due. The certificate's own dates stay on the real clock: clients judge
    /// them by theirs.
    clock: Clock,
}

impl ServerTls {
    pub fn new(ca: Ca, extra_sans: &[San], validity: Duration, clock: Clock) -> Result<ServerTls, TlsError> {
        let mut sans: Vec<San> = BUILTIN_SANS.iter().filter_map(|s| s.parse().ok()).collect();
        for san in extra_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let current = issue_config(&ca, &sans, validity, clock.now())?;
        Ok(ServerTls { ca, sans, validity, current: RwLock::new(current), clock })
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// The config for a new connection; re-issues the certificate when it is due.
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = self.clock.now();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if now < current.renew_at {
                return Arc::clone(&current.config);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if now >= current.renew_at {
            match issue_config(&self.ca, &self.sans, self.validity, now) {
                Ok(fresh) => {
                    crate::log::info("tls", "server certificate re-issued");
                    *current = fresh;
                }
                // Keep serving the old certificate and retry on the next connection.
                Err(e) => crate::log::error("tls", &format!("re-issuing the server certificate failed: {e}")),
            }
        }
        Arc::clone(&current.config)
    }
}

/// ring's suites with AES-128-GCM first. The server's order wins (`ignore_client_order`):
/// rustls and curl clients offer AES-256-GCM first, which costs a third more per byte with no
/// gain a loopback or LAN registry needs (Go's crypto/tls, docker's client, puts AES-128-GCM
/// first on CPUs with AES instructions too). Issue 9: HTTPS blob pull 1503 -> 1681 MB/s.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: AES-128-GCM (TLS 1.3 first, then 1.2) ahead, the rest in ring's order.
    provider.cipher_suites.sort_by_key(|suite| !is_aes_128_gcm(suite.suite()));
    provider
}

fn is_aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite::*;
    matches!(
        suite,
        TLS13_AES_128_GCM_SHA256 | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn issue_config(ca: &Ca, sans: &[San], validity: Duration, now: SystemTime) -> Result<Current, TlsError> {
    let (chain, key) = ca.issue(sans, validity)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(cert_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(cert_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Renew once two thirds of the validity have passed, well before clients see it expire.
    let renew_at = now + validity * 2 / 3;
    Ok(Current { config: Arc::new(config), renew_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let home = tempfile::tempdir().unwrap();
        let first = Ca::load_or_create(home.path()).unwrap();
        let again = Ca::load_or_create(home.path()).unwrap();
        assert_eq!(first.pem(), again.pem());
        let mode = fs::metadata(ca_dir(home.path()).join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn aes_128_gcm_is_chosen_over_a_client_preferring_aes_256() {
        use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
        let home = tempfile::tempdir().unwrap();
        let tls =
            ServerTls::new(Ca::load_or_create(home.path()).unwrap(), &[], Duration::from_secs(3600), Clock::system())
                .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(tls.ca_pem().as_bytes()).unwrap()).unwrap();
        // ring's default order, as a rustls client (and curl) offers it: AES-256-GCM first.
        let client_provider = rustls::crypto::ring::default_provider();
        assert_eq!(client_provider.cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(tls.config()).unwrap();
        // An in-memory handshake: each side's records handed to the other until both are done.
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking());
        let chosen = server.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(chosen, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[test]
    fn certificate_is_reissued_when_due() {
        let home = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(home.path()).unwrap();
        let offset = home.path().join("clock-offset");
        let clock = Clock::offset_by_file(offset.clone());
        let tls = ServerTls::new(ca, &["my-host".parse().unwrap()], Duration::from_secs(3600), clock).unwrap();
        let first = tls.config();
        assert!(Arc::ptr_eq(&first, &tls.config()));
        fs::write(&offset, "2390").unwrap();
        assert!(Arc::ptr_eq(&first, &tls.config()), "re-issued before two thirds of the validity");
        fs::write(&offset, "2401").unwrap();
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second), "a new config after two thirds of the validity");
        assert!(Arc::ptr_eq(&second, &tls.config()), "re-issued once, then kept");
    }
}
