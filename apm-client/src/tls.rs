//! TLS towards the server: whom to trust (the system's roots or a CA the
//! application gives), the name the certificate must carry, and the
//! stream a session runs over, plain or TLS.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::error::Error;

/// Which certificate authorities the client trusts.
#[derive(Debug, Clone)]
enum Roots {
    /// The operating system's store.
    System,
    /// Only the CA certificates in this PEM text.
    Pem(Arc<[u8]>),
}

/// How the client speaks TLS; set through the builder's `tls*` calls.
#[derive(Debug, Clone)]
pub(crate) struct TlsOptions {
    roots: Roots,
    server_name: Option<String>,
    /// Made at the first connect and kept for reconnects (and for clones
    /// of the builder made after it): reading the system's roots takes
    /// milliseconds.
    config: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl TlsOptions {
    /// Trust the system's roots.
    pub(crate) fn system() -> TlsOptions {
        TlsOptions {
            roots: Roots::System,
            server_name: None,
            config: Arc::default(),
        }
    }

    /// Trust only the CA certificates in `pem`.
    pub(crate) fn with_ca_pem(pem: Vec<u8>) -> TlsOptions {
        TlsOptions {
            roots: Roots::Pem(pem.into()),
            ..TlsOptions::system()
        }
    }

    /// Check the certificate against `name` rather than the address's host.
    pub(crate) fn set_server_name(&mut self, name: String) {
        self.server_name = Some(name);
    }

    /// The name set with [`TlsOptions::set_server_name`].
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Runs the TLS handshake over `tcp` with the server at `addr`.
    pub(crate) async fn connect(&self, tcp: TcpStream, addr: &str) -> Result<Stream, Error> {
        let failed = |reason: String| Error::Tls {
            addr: addr.to_owned(),
            reason,
        };
        let name = self.server_name.as_deref().unwrap_or_else(|| host_of(addr));
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| failed(format!("{name:?} cannot be a server name: {e}")))?;
        let config = match self.config.get() {
            Some(c) => c.clone(),
            None => {
                let made = Arc::new(self.make_config().map_err(&failed)?);
                self.config.get_or_init(|| made).clone()
            }
        };
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Stream::Tls(Box::new(stream)))
    }

    fn make_config(&self) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                // Unreadable entries are skipped; only having none at all
                // is a failure.
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "no usable root certificates in the system's store ({} errors); \
                         give the server's CA with `tls_ca_pem`",
                        found.errors.len()
                    ));
                }
            }
            Roots::Pem(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("the CA PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("the CA PEM: a certificate rustls refuses: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("the CA PEM holds no CERTIFICATE section".into());
                }
            }
        }
        Ok(
            ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// The host part of `host:port`, without an IPv6 literal's brackets.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The byte stream a session runs over.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the session's state is a few kilobytes).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("example.com:7600"), "example.com");
        assert_eq!(host_of("127.0.0.1:7600"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7600"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn a_ca_pem_without_certificates_is_refused() {
        let e = TlsOptions::with_ca_pem(b"nothing here".to_vec())
            .make_config()
            .unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }
}
