//! A small HTTP/1.1 client for the tests of the HTTP listener: one
//! connection per request, the answer read whole.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::API_KEY;

/// Requests to one server's HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpClient {
    addr: SocketAddr,
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
        HttpClient { addr }
    }

    /// Sends `method path` with `headers` and `body`; the whole answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the HTTP listener");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let res = sender.send_request(req).await.expect("HTTP answer");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = res.status();
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let body = res
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes();
        Answer {
            status,
            content_type,
            retry_after,
            body,
        }
    }

    /// `GET path` with no key.
    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], Bytes::new()).await
    }

    /// Calls API method `method` with the test key and `params`.
    pub async fn call(&self, method: &str, params: Value) -> Answer {
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

    /// Calls `method` and returns its JSON answer; panics unless 200.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        let answer = self.call(method, params).await;
        assert_eq!(answer.status, StatusCode::OK, "{method}: {}", answer.text());
        answer.json()
    }
}
