//! A small HTTP client for the tests of the HTTP listener: HTTP/1.1 in
//! clear text, or over TLS trusting a test's CA (HTTP/1.1, or HTTP/2 as
//! ALPN agrees); one connection per request, or one kept open for several;
//! the answer read whole.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::API_KEY;

/// Requests to one server's HTTP listener.
#[derive(Clone)]
pub struct HttpClient {
    addr: SocketAddr,
    /// TLS, when the listener speaks HTTPS.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// One open connection, kept for as many requests as the test sends.
pub struct Connection {
    sender: Sender,
    /// Drives the connection; ends when either side closes it.
    driver: tokio::task::JoinHandle<()>,
    host: String,
    /// The protocol ALPN agreed on, if any (`h2`, `http/1.1`).
    pub alpn: Option<Vec<u8>>,
    /// The certificate the server presented (DER), over TLS.
    pub server_cert: Option<Vec<u8>>,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// Runs a client connection's I/O until it closes, whatever the reason.
fn drive<E>(
    conn: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = conn.await;
    })
}

/// A TLS client configuration trusting only `ca_pem`, offering `alpn`.
fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

impl Connection {
    /// Sends `method path` with `headers` and `body` on this connection;
    /// the whole answer, or why there is none.
    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let mut req = Request::builder().method(method);
        req = match self.sender {
            // HTTP/2 carries the authority in the URI, not a Host header.
            Sender::Http2(_) => req.uri(format!("https://{}{path}", self.host)),
            Sender::Http1(_) => req.uri(path).header("host", &self.host),
        };
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let res = match &mut self.sender {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
        .map_err(|e| format!("no HTTP answer: {e}"))?;
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = res.status();
        let version = res.version();
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("HTTP body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            version,
            content_type,
            retry_after,
            body,
        })
    }

    /// [`Connection::try_request`]; panics if there is no answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        self.try_request(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Waits until the connection is closed (by the server: the test
    /// holds it open).
    pub async fn closed(self) {
        let Connection { sender, driver, .. } = self;
        let _ = driver.await;
        // Held until now: dropping it would close the connection from
        // this side.
        drop(sender);
    }

    /// `GET path` with no key.
    pub async fn get(&mut self, path: &str) -> Answer {
        self.request("GET", path, &[], Bytes::new()).await
    }

    /// Calls API method `method` with the test key and `params`.
    pub async fn call(&mut self, method: &str, params: Value) -> Answer {
        let auth = format!("apikey {API_KEY}");
        self.request(
            "POST",
            &format!("/api/{method}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            params.to_string(),
        )
        .await
    }
}

/// An answer: its status, content type and body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The HTTP version it came in.
    pub version: Version,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_owned()
    }
}

impl HttpClient {
    /// A client for the listener at `addr`.
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient { addr, tls: None }
    }

    /// A client for the HTTPS listener at `addr`, trusting only the CA
    /// certificate `ca_pem` and speaking HTTP/1.1.
    pub fn https(addr: SocketAddr, ca_pem: &str) -> HttpClient {
        HttpClient {
            addr,
            tls: Some(tls_connector(ca_pem, &[b"http/1.1"])),
        }
    }

    /// Like [`HttpClient::https`], offering HTTP/2 by ALPN and speaking it
    /// when the server agrees.
    pub fn https_h2(addr: SocketAddr, ca_pem: &str) -> HttpClient {
        HttpClient {
            addr,
            tls: Some(tls_connector(ca_pem, &[b"h2", b"http/1.1"])),
        }
    }

    /// Opens a connection (with its TLS handshake, over HTTPS).
    pub async fn try_connect(&self) -> Result<Connection, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to the HTTP listener: {e}"))?;
        let host = self.addr.to_string();
        let Some(tls) = &self.tls else {
            let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
            return Ok(Connection {
                sender: Sender::Http1(sender),
                driver: drive(conn),
                host,
                alpn: None,
                server_cert: None,
            });
        };
        let stream = tls
            .connect(ServerName::IpAddress(self.addr.ip().into()), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let session = stream.get_ref().1;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let server_cert = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec());
        let io = TokioIo::new(stream);
        let (sender, driver) = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            (Sender::Http2(sender), drive(conn))
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
            (Sender::Http1(sender), drive(conn))
        };
        Ok(Connection {
            sender,
            driver,
            host,
            alpn,
            server_cert,
        })
    }

    /// Opens a connection; panics if it cannot.
    pub async fn connect(&self) -> Connection {
        self.try_connect().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `method path` with `headers` and `body` on a connection of
    /// its own; the whole answer, or why there is none.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let mut conn = self.try_connect().await?;
        conn.try_request(method, path, headers, body).await
    }

    /// [`HttpClient::try_request`]; panics if there is no answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        self.connect()
            .await
            .request(method, path, headers, body)
            .await
    }

    /// `GET path` with no key.
    pub async fn get(&self, path: &str) -> Answer {
        self.connect().await.get(path).await
    }

    /// Calls API method `method` with the test key and `params`.
    pub async fn call(&self, method: &str, params: Value) -> Answer {
        self.connect().await.call(method, params).await
    }

    /// Calls `method` and returns its JSON answer; panics unless 200.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        let answer = self.call(method, params).await;
        assert_eq!(answer.status, StatusCode::OK, "{method}: {}", answer.text());
        answer.json()
    }
}
