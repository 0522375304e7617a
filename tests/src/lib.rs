//! Helpers for the end-to-end tests: a real server on an ephemeral port and
//! a raw protocol client that sends and expects exact frames.

pub mod http;
pub mod process;
pub mod redis;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apm_core::message::{
    Conversation, Direct, Hello, HistoryRequest, HistoryResponse, Publish, Receipt, Sub, SubOk,
    Unread, UnreadRequest,
};
use apm_core::{ApmCodec, Flags, Frame, Message};
use apm_server::{Config, Metrics, Server, StoreKind};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// How long a test waits for an event before it calls the event missing.
/// A guard against hangs, not a sleep: waits end as soon as the event comes.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The API key [`TestServer::start_http`] configures.
pub const API_KEY: &str = "test-api-key-0123456789";

/// A secret for tests that use token auth.
pub const SECRET: &str = "test-secret-0123456789";

/// A server running in this process on 127.0.0.1 and an ephemeral port.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its HTTP listener is, if it has one.
    pub http: Option<SocketAddr>,
    /// Fires the graceful shutdown.
    pub shutdown: CancellationToken,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    /// Resolves when the server has stopped.
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with dev auth, the memory store, no message rate
    /// limit (the tests of other things send faster than a person; the
    /// tests of the limits set them in `tweak`), and `tweak` applied to the
    /// defaults.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_over(None, tweak).await
    }

    /// Starts a server over a store of the test's.
    pub async fn start_with_store(
        store: Arc<dyn apm_server::store::Store>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        TestServer::start_over(Some(store), tweak).await
    }

    async fn start_over(
        store: Option<Arc<dyn apm_server::store::Store>>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            store: StoreKind::Memory,
            ..Config::default().without_rate_limits()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let http_listener = match config.http_listen.0 {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind http"),
            ),
            None => None,
        };
        let http = http_listener
            .as_ref()
            .map(|l| l.local_addr().expect("http addr"));
        let server = match store {
            Some(store) => Server::with_store(config, store),
            None => Server::new(config),
        }
        .expect("config");
        let server = match http_listener {
            Some(l) => server.with_http(l).expect("http settings"),
            None => server,
        };
        let metrics = server.metrics();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, shutdown.clone()));
        TestServer {
            addr,
            http,
            shutdown,
            metrics,
            task,
        }
    }

    /// Starts a server like [`TestServer::start`] with its HTTP listener
    /// on an ephemeral port and the API key [`API_KEY`] named `backend`.
    pub async fn start_http(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start(|c| {
            c.http_listen =
                apm_server::config::HttpListen(Some("127.0.0.1:0".parse().expect("addr")));
            c.api_keys = vec![format!("backend={API_KEY}")];
            tweak(c);
        })
        .await
    }

    /// A client for the HTTP listener; panics if there is none.
    pub fn http(&self) -> http::HttpClient {
        http::HttpClient::new(self.http.expect("the server has an HTTP listener"))
    }

    /// Starts a server with token auth.
    pub async fn start_with_tokens(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start(|c| {
            c.secret = SECRET.to_owned();
            tweak(c);
        })
        .await
    }

    /// Shuts the server down gracefully and waits until it has stopped
    /// (its store flushed and closed).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        task.await.expect("server task").expect("server run");
    }

    /// Dev-mode client for `user`, past the handshake.
    pub async fn client(&self, user: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.hello(user, "").await;
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A dev-mode SDK client for `user` at `addr` that reconnects fast
/// (tests cut its connection or kill its server).
pub async fn quick_sdk(addr: impl ToString, user: &str) -> apm_client::Client {
    quick_sdk_nodes(&[addr.to_string()], user).await
}

/// [`quick_sdk`] for a cluster: the client knows every node in `addrs`.
pub async fn quick_sdk_nodes(addrs: &[String], user: &str) -> apm_client::Client {
    apm_client::Client::builder(addrs.first().cloned().unwrap_or_default())
        .nodes(addrs.iter().cloned())
        .credentials(user, "")
        .reconnect(apm_client::ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_attempts: Some(200),
        })
        .connect()
        .await
        .expect("connect")
}

/// The wall clock in milliseconds since the Unix epoch, as the server
/// reads it for token expiry and revocations.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A token signed with [`SECRET`].
pub fn token(user: &str, admin: bool, ttl: Duration) -> String {
    let role = if admin {
        apm_core::message::Role::Admin
    } else {
        apm_core::message::Role::User
    };
    apm_server::auth::mint(SECRET.as_bytes(), user, role, ttl)
}

/// A binary of this workspace, built for the profile the test runs under.
///
/// `CARGO_BIN_EXE_*` only exists for a package's own binaries, so this asks
/// cargo to build the workspace's binaries into the target directory the
/// test executable lives in (`<target>/<profile>/deps/<test>-<hash>`) and
/// returns `<target>/<profile>/<bin>`. It builds them all, as the README's
/// test command does before the tests (`cargo build --workspace --bins`):
/// the same packages give the same features, so after that build this one
/// is a no-op, where `-p <package>` would resolve other features and
/// rebuild inside the test's time limit. Asking once per test process
/// means a stale binary is never tested.
pub fn workspace_binary(bin: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps");
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return path;
    }
    let target_dir = profile_dir.parent().expect("<target>");
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .expect("a profile directory name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir);
    // The test runner sets the package's `CARGO_*` variables for the test;
    // some build scripts (ring's) rerun when one changes, which would make
    // this build differ from the one before the tests and rebuild both.
    // Cargo's own settings (`CARGO_INCREMENTAL`, `CARGO_BUILD_*`, ...)
    // stay: without them this build would differ the other way.
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && name.starts_with("CARGO_")
            && !is_cargo_setting(name)
        {
            build.env_remove(name);
        }
    }
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build --workspace --bins: {status}");
    assert!(path.exists(), "{} was not built", path.display());
    *built = true;
    path
}

/// Whether `name` is one of cargo's settings rather than a variable the
/// test runner sets for the package under test.
fn is_cargo_setting(name: &str) -> bool {
    matches!(
        name,
        "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_INCREMENTAL"
    ) || [
        "CARGO_BUILD_",
        "CARGO_PROFILE_",
        "CARGO_NET_",
        "CARGO_TERM_",
        "CARGO_HTTP_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// A raw protocol client.
pub struct Client {
    io: Framed<TcpStream, ApmCodec>,
    next_id: u32,
    /// The authenticated user.
    pub user: String,
}

impl Client {
    /// Connects without saying anything.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client::over(stream)
    }

    /// Connects with a small receive buffer, to play a slow reader.
    pub async fn connect_small_buffer(addr: SocketAddr, bytes: u32) -> Client {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("rcvbuf");
        let stream = socket.connect(addr).await.expect("connect");
        Client::over(stream)
    }

    fn over(stream: TcpStream) -> Client {
        // Server frames may be a little over the client-bound limit.
        let limits = apm_core::Limits {
            max_frame_len: 2 * apm_core::Limits::DEFAULT_MAX_FRAME_LEN,
            ..Default::default()
        };
        Client {
            io: Framed::new(stream, ApmCodec::new(limits)),
            next_id: 1,
            user: String::new(),
        }
    }

    /// Sends Hello and expects Welcome.
    pub async fn hello(&mut self, user: &str, token: &str) -> apm_core::message::Welcome {
        let id = self
            .send(Message::Hello(Hello {
                user: user.to_owned(),
                token: token.to_owned(),
                client: "apm-tests".to_owned(),
            }))
            .await;
        let reply = self.recv().await;
        assert_eq!(reply.request_id, id);
        match reply.message {
            Message::Welcome(w) => {
                self.user = w.user.clone();
                w
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends a message with a fresh request id, which it returns.
    pub async fn send(&mut self, message: Message) -> u32 {
        self.send_flags(message, Flags::empty()).await
    }

    /// Sends a message with flags.
    pub async fn send_flags(&mut self, message: Message, flags: Flags) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.io
            .send(Frame::new(id, message).with_flags(flags))
            .await
            .expect("send");
        id
    }

    /// Sends a message with flags; `None` once the connection is gone.
    pub async fn try_send_flags(&mut self, message: Message, flags: Flags) -> Option<u32> {
        let id = self.next_id;
        self.next_id += 1;
        self.io
            .send(Frame::new(id, message).with_flags(flags))
            .await
            .ok()?;
        Some(id)
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// The next frame; panics on EOF, error or after [`PATIENCE`].
    pub async fn recv(&mut self) -> Frame {
        match self.next().await {
            Some(f) => f,
            None => panic!("{}: connection closed", self.user),
        }
    }

    /// The next frame, or `None` at EOF (a reset counts as EOF).
    pub async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(PATIENCE, self.io.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(apm_core::DecodeError::Io(_)))) | Ok(None) => None,
            Ok(Some(Err(e))) => panic!("{}: bad frame from server: {e}", self.user),
            Err(_) => panic!("{}: nothing within {PATIENCE:?}", self.user),
        }
    }

    /// Expects the connection to close, with no more frames.
    pub async fn expect_eof(&mut self) {
        if let Some(f) = self.next().await {
            panic!("{}: expected EOF, got {f:?}", self.user);
        }
    }

    /// Subscribes and waits for SubOk.
    pub async fn sub(&mut self, channel: &str) -> apm_core::message::SubOk {
        let id = self
            .send(Message::Sub(Sub {
                channel: channel.to_owned(),
                since: None,
            }))
            .await;
        loop {
            let f = self.recv().await;
            if let (true, Message::SubOk(ok)) = (f.request_id == id, &f.message) {
                return ok.clone();
            }
            assert!(
                matches!(f.message, Message::PresenceEvent(_)),
                "{}: expected SubOk, got {f:?}",
                self.user
            );
        }
    }

    /// Subscribes with `since` and waits for SubOk.
    pub async fn sub_since(&mut self, channel: &str, since: u64) -> SubOk {
        let id = self
            .send(Message::Sub(Sub {
                channel: channel.into(),
                since: Some(since),
            }))
            .await;
        match self.reply_to(id).await {
            Message::SubOk(ok) => ok,
            other => panic!("{}: expected SubOk, got {other:?}", self.user),
        }
    }

    /// Reads a page of history.
    pub async fn history(&mut self, req: HistoryRequest) -> HistoryResponse {
        let id = self.send(Message::HistoryRequest(req)).await;
        match self.reply_to(id).await {
            Message::HistoryResponse(h) => h,
            other => panic!("{}: expected HistoryResponse, got {other:?}", self.user),
        }
    }

    /// Asks for unread counts.
    pub async fn unread(&mut self, conversations: Vec<Conversation>) -> Vec<Unread> {
        let id = self
            .send(Message::UnreadRequest(UnreadRequest { conversations }))
            .await;
        match self.reply_to(id).await {
            Message::UnreadResponse(r) => r.counts,
            other => panic!("{}: expected UnreadResponse, got {other:?}", self.user),
        }
    }

    /// The reply to request `id`, skipping pushed frames (deliveries and
    /// presence events) that come before it.
    pub async fn reply_to(&mut self, id: u32) -> Message {
        loop {
            let f = self.recv().await;
            if f.request_id == id {
                return f.message;
            }
            assert!(
                matches!(f.message, Message::Deliver(_) | Message::PresenceEvent(_)),
                "{}: expected the reply to {id}, got {f:?}",
                self.user
            );
        }
    }

    /// Publishes text.
    pub async fn publish(&mut self, channel: &str, text: &str, flags: Flags) -> u32 {
        self.send_flags(
            Message::Publish(Publish {
                channel: channel.to_owned(),
                kind: apm_core::message::content_kind::TEXT,
                msg_id: 0,
                payload: Bytes::copy_from_slice(text.as_bytes()),
            }),
            flags,
        )
        .await
    }

    /// Sends text to `user` with a receipt and returns the receipt.
    pub async fn direct(&mut self, user: &str, text: &str) -> Receipt {
        let id = self
            .send_flags(
                Message::Direct(Direct {
                    user: user.to_owned(),
                    kind: apm_core::message::content_kind::TEXT,
                    msg_id: 0,
                    payload: Bytes::copy_from_slice(text.as_bytes()),
                }),
                Flags::RECEIPT,
            )
            .await;
        match self.reply_to(id).await {
            Message::Receipt(r) => r,
            other => panic!("{}: expected Receipt, got {other:?}", self.user),
        }
    }

    /// The next Deliver, skipping presence events.
    pub async fn deliver(&mut self) -> apm_core::message::Deliver {
        loop {
            let f = self.recv().await;
            match f.message {
                Message::Deliver(d) => return d,
                Message::PresenceEvent(_) => continue,
                other => panic!("{}: expected Deliver, got {other:?}", self.user),
            }
        }
    }

    /// Sends Ping and waits for its Pong, returning what came before it.
    pub async fn round_trip(&mut self) -> Vec<Frame> {
        let id = self.send(Message::Ping).await;
        let mut before = Vec::new();
        loop {
            let f = self.recv().await;
            if f.request_id == id && f.message == Message::Pong {
                return before;
            }
            before.push(f);
        }
    }
}

/// A TCP relay in front of a server, whose connections a test can cut and
/// whose upstream it can move to another server.
///
/// It makes clients reconnect without a server giving up its port: a
/// restarted server would have to bind the same port again, which anyone
/// binding port 0 in between may have been handed.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    upstream: Arc<std::sync::Mutex<SocketAddr>>,
    /// While set, what the server sends is read and thrown away.
    muted: Arc<std::sync::atomic::AtomicBool>,
    /// Ends the relay's thread.
    stop: CancellationToken,
}

impl Relay {
    /// Relays every connection to `upstream`, on a thread and runtime of
    /// its own: a server of the test's that blocks a thread of the test's
    /// runtime on a synchronous read through the relay never stalls it.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let upstream = Arc::new(std::sync::Mutex::new(upstream));
        let (current, target) = (cut.clone(), upstream.clone());
        let muted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mute = muted.clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the relay's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stopped.cancelled() => return,
                    };
                    let Ok((down, _)) = accepted else { return };
                    let token = current.lock().expect("lock").clone();
                    let to = *target.lock().expect("lock");
                    let (mute, stopped) = (mute.clone(), stopped.clone());
                    tokio::spawn(async move {
                        let Ok(up) = TcpStream::connect(to).await else {
                            return;
                        };
                        let (mut down_read, mut down_write) = down.into_split();
                        let (mut up_read, mut up_write) = up.into_split();
                        let upward = tokio::io::copy(&mut down_read, &mut up_write);
                        let downward = async {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = match up_read.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if !mute.load(std::sync::atomic::Ordering::SeqCst)
                                    && down_write.write_all(&buf[..n]).await.is_err()
                                {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = stopped.cancelled() => {}
                            _ = upward => {}
                            _ = downward => {}
                        }
                    });
                }
            });
        });
        Relay {
            addr,
            cut,
            upstream,
            muted,
            stop,
        }
    }

    /// Drops every connection relayed so far; new ones are relayed as
    /// before.
    pub fn cut(&self) {
        let mut token = self.cut.lock().expect("lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// While `muted`, what the server sends on every relayed connection is
    /// lost on the way (receipts a client never gets); what clients send
    /// still goes through.
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, std::sync::atomic::Ordering::SeqCst);
    }

    /// Relays new connections to `upstream` from now on.
    pub fn point_at(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("lock") = upstream;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

/// A durable store whose writes fail while told to, and says when one did.
#[derive(Debug, Default)]
pub struct Flaky {
    /// While set, every write fails.
    pub failing: std::sync::atomic::AtomicBool,
    /// Notified at each failed write.
    pub failed: tokio::sync::Notify,
}

impl apm_server::store::Store for Flaky {
    fn is_durable(&self) -> bool {
        true
    }

    fn epoch(&self) -> u64 {
        1
    }

    fn write(
        &self,
        _batch: &apm_server::store::Batch,
        _keep: &apm_server::retention::RetentionPolicy,
    ) -> Result<(), apm_server::store::StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            self.failed.notify_one();
            return Err(apm_server::store::StoreError::Db("disk full".into()));
        }
        Ok(())
    }

    fn expire(
        &self,
        _now_ms: u64,
        _keep: &apm_server::retention::RetentionPolicy,
    ) -> Result<(), apm_server::store::StoreError> {
        Ok(())
    }

    fn recover(
        &self,
        _keep: &apm_server::retention::RetentionPolicy,
    ) -> Result<apm_server::store::Recovered, apm_server::store::StoreError> {
        Ok(Default::default())
    }

    fn read_range(
        &self,
        _conversation: &apm_server::conversation::ConversationId,
        _from: u64,
        _to: u64,
        _keep: &apm_server::retention::RetentionPolicy,
    ) -> Result<Vec<apm_server::store::Record>, apm_server::store::StoreError> {
        Ok(Vec::new())
    }

    fn last(
        &self,
        _conversation: &apm_server::conversation::ConversationId,
    ) -> Result<Option<u64>, apm_server::store::StoreError> {
        // Nothing is kept, and no conversation leaves memory in this test.
        Ok(None)
    }

    fn acked(
        &self,
        _user: &str,
        _conversation: &apm_server::conversation::ConversationId,
    ) -> Result<Option<u64>, apm_server::store::StoreError> {
        Ok(None)
    }
}
