//! TLS on the client listener and, with `http_tls`, the HTTP listener:
//! the certificate chain and key read from PEM files, rustls server
//! configurations (the `ring` provider) made at start, and a reload that
//! swaps the certificate for the handshakes that follow while established
//! sessions keep theirs.
//!
//! The configurations hold a resolver rather than the certificate itself,
//! so a reload replaces one `Arc` and nothing else: the session caches and
//! the acceptors every connection task cloned stay as they are. Both
//! listeners' configurations share the one resolver, so one reload serves
//! both.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate ({why})")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        why: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key ({why})")]
    Key {
        /// The file.
        path: PathBuf,
        /// What the PEM parser or the crypto provider said.
        why: String,
    },
    /// The key does not belong to the certificate, or rustls refused the
    /// pair.
    #[error("{key} does not go with {cert}: {source}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The protocol versions could not be set up (a build without TLS 1.3
    /// and 1.2).
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// Where the certificate and key live, and the pair in use.
#[derive(Debug)]
struct Certs {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a valid pair: a writer only ever
        // swaps the `Arc`.
        Some(match self.current.read() {
            Ok(key) => key.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

impl Certs {
    /// Reads and checks the pair from the files.
    fn read(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        read_pair(&self.cert_path, &self.key_path, &self.provider)
    }
}

/// Reads a PEM certificate chain and its PEM private key, and checks that
/// they belong together.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.to_owned(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path.to_owned(),
            why: "the file has no CERTIFICATE section".into(),
        });
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        why: e.to_string(),
    })?;
    let pair = CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::General(why) => TlsError::Key {
            path: key_path.to_owned(),
            why,
        },
        source => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
    })?;
    Ok(Arc::new(pair))
}

/// The ALPN name of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The ALPN name of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A server configuration (TLS 1.3 and 1.2, no client certificates) that
/// asks `certs` for the pair to present at each handshake.
fn server_config(certs: &Arc<Certs>) -> Result<ServerConfig, TlsError> {
    Ok(ServerConfig::builder_with_provider(certs.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone()))
}

/// TLS for the listeners: what each connection's task uses to accept, and
/// the certificate it presents.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<Certs>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("certs", &self.certs).finish()
    }
}

impl Tls {
    /// Loads the certificate chain at `cert_path` and the key at
    /// `key_path` (both PEM) and makes the server configuration.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let first = read_pair(cert_path, key_path, &provider)?;
        let certs = Arc::new(Certs {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(first),
            provider,
        });
        let config = server_config(&certs)?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    /// What a connection's task accepts with.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// What the HTTP listener accepts with: the same certificate (and its
    /// reloads), offering HTTP/2 and HTTP/1.1 by ALPN. The client listener
    /// offers no ALPN: its protocol is apm's own, whatever a client asks.
    pub(crate) fn http_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let mut config = server_config(&self.certs)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The handle that reloads the certificate.
    pub(crate) fn reloader(&self) -> TlsReloader {
        TlsReloader(self.certs.clone())
    }
}

/// Reloads the listeners' certificate and key from their files; cheap to
/// clone. Handshakes after a reload present the new certificate;
/// connections already established keep their session.
#[derive(Debug, Clone)]
pub struct TlsReloader(Arc<Certs>);

impl TlsReloader {
    /// Reads the files again and, if they hold a valid pair, uses it for
    /// every handshake from now on. On an error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = self.0.read()?;
        match self.0.current.write() {
            Ok(mut current) => *current = pair,
            Err(poisoned) => *poisoned.into_inner() = pair,
        }
        Ok(())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.0.cert_path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.0.key_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh self-signed pair for `localhost`, written to `dir` as
    /// `cert.pem` and `key.pem`; returns the certificate's DER.
    fn write_pair(dir: &Path) -> Vec<u8> {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
        pair.cert.der().to_vec()
    }

    fn presented(certs: &Certs) -> Vec<u8> {
        certs.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_reload_swaps_the_pair_and_a_bad_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let first = write_pair(dir.path());
        let tls = Tls::load(&cert, &key).unwrap();
        assert_eq!(presented(&tls.certs), first);

        let second = write_pair(dir.path());
        let reloader = tls.reloader();
        reloader.reload().unwrap();
        assert_eq!(presented(&tls.certs), second);

        std::fs::write(&key, "not a key").unwrap();
        let e = reloader.reload().unwrap_err().to_string();
        assert!(e.contains(&*key.to_string_lossy()), "{e}");
        assert_eq!(presented(&tls.certs), second, "the pair in use stays");
    }

    #[test]
    fn errors_name_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = Tls::load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("No such file"), "{e}");

        write_pair(dir.path());
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        let e = Tls::load(&cert, &key).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");

        std::fs::write(
            &cert,
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Tls::load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
