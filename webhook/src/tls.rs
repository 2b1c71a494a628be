//! rustls server configuration with certificate hot reload.
//!
//! Reload polls the files' contents once a second instead of using inotify:
//! Kubernetes updates Secret volumes by swapping a `..data` symlink, which
//! file watches on the visible paths miss, and a poll of two small files is
//! cheap. A half-written update (new cert, old key) fails the key-match
//! check and the previous certificate keeps serving until the pair agrees.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// rustls rejected the key, or it does not belong to the certificate.
    #[error("unusable key pair: {0}")]
    KeyPair(#[source] rustls::Error),
    /// The certificate is not valid X.509.
    #[error("cannot parse certificate: {0}")]
    Parse(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// A loaded certificate pair and its expiry.
#[derive(Debug)]
pub struct LoadedCert {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// notAfter of the leaf, as a Unix timestamp.
    pub not_after: i64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a PEM certificate chain and private key.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate(cert_path.to_owned()))?;
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(TlsError::Parse)?
        .1
        .validity()
        .not_after
        .timestamp();
    let key: PrivateKeyDer<'static> =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_path.to_owned()))?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(TlsError::KeyPair)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(TlsError::KeyPair)?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        not_after,
    })
}

/// A certificate resolver whose certificate can be swapped at run time.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    not_after: std::sync::atomic::AtomicI64,
}

impl ReloadingCert {
    /// Loads the pair once; fails if it is unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let loaded = load_pem(&read(cert_path)?, &read(key_path)?, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::new(loaded.certified),
            not_after: loaded.not_after.into(),
        })
    }

    /// notAfter of the certificate being served.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Polls the files every `interval` and swaps in a changed, valid pair.
    /// `on_reload` gets the new notAfter. Runs until dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(i64) + Send) {
        let mut last_seen = self.snapshot().ok();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Ok(seen) = self.snapshot() else {
                continue; // mid-swap or briefly missing; try again next tick
            };
            if last_seen.as_ref() == Some(&seen) {
                continue;
            }
            match load_pem(&seen.0, &seen.1, &self.cert_path, &self.key_path) {
                Ok(loaded) => {
                    self.current.store(loaded.certified);
                    self.not_after
                        .store(loaded.not_after, std::sync::atomic::Ordering::Relaxed);
                    on_reload(loaded.not_after);
                    tracing::info!(cert = %self.cert_path.display(), not_after = loaded.not_after, "serving certificate reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "certificate files changed but are not usable yet; still serving the previous certificate");
                }
            }
            last_seen = Some(seen);
        }
    }

    fn snapshot(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert_path)?, read(&self.key_path)?))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with ring, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::KeyPair)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
