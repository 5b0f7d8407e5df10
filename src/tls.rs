//! The certificate a TLS server presents, read from PEM files and read again when they change
//! (cert-manager and the chart's own CA rotate them in place), so that a renewal needs no
//! restart. A change that does not parse keeps the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How often the files are looked at.
const RECHECK: Duration = Duration::from_secs(2);

/// A certificate and its key, as files.
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Stamp, Arc<ServerConfig>)>,
}

/// What tells a file changed: its modification time and length, for both files.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp_of(paths: [&Path; 2]) -> Stamp {
    paths.map(|path| std::fs::metadata(path).map(|meta| (meta.modified().ok(), meta.len())).unwrap_or((None, 0)))
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let problem = |path: &Path, problem: String| Error::Tls { path: path.display().to_string(), problem };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem(cert, format!("cannot read a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(problem(cert, "holds no certificate".into()));
    }
    // The key's own error says what is wrong with the file, never its content.
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| problem(key, format!("cannot read a PEM private key: {e}")))?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| problem(cert, format!("the certificate and key do not make a server identity: {e}")))
        .map(|mut config| {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
}

impl CertificateFiles {
    /// Reads both files; a server cannot start without a certificate.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self> {
        let stamp = stamp_of([&cert, &key]);
        let config = Arc::new(load(&cert, &key)?);
        Ok(Self { cert, key, current: RwLock::new((stamp, config)) })
    }

    /// The configuration to accept the next connection with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// Reads the files again if they changed since they were last read; `true` when a new
    /// certificate is in use.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = stamp_of([&self.cert, &self.key]);
        if self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0 == stamp {
            return false;
        }
        match load(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (stamp, Arc::new(config));
                tracing::info!(cert = %self.cert.display(), "certificate files changed; serving the new certificate");
                true
            }
            Err(error) => {
                // A writer may be half-way through the pair: try again at the next look.
                tracing::warn!(%error, "certificate files changed but cannot be used; keeping the current certificate");
                false
            }
        }
    }

    /// Looks at the files every couple of seconds until `shutdown` turns true.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RECHECK) => { self.reload_if_changed(); }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
