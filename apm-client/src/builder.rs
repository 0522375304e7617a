//! Connection options and the builder that connects.

use std::time::Duration;

use crate::tls::TlsOptions;

/// How the client reconnects after losing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Longest delay between retries; delays double up to it, each jittered
    /// to between half and all of its value.
    pub max_delay: Duration,
    /// Give up after this many failed attempts in a row; `None` retries
    /// forever.
    pub max_attempts: Option<u32>,
}

impl ReconnectPolicy {
    /// Never reconnect: a lost connection closes the client.
    pub const NEVER: ReconnectPolicy = ReconnectPolicy {
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        max_attempts: Some(0),
    };
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

/// What a call does when the send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Wait for room.
    #[default]
    Wait,
    /// Fail at once with [`Error::QueueFull`](crate::Error::QueueFull).
    Fail,
}

/// Settings for a [`Client`](crate::Client); start with
/// [`Client::builder`](crate::Client::builder).
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The node in use.
    pub(crate) addr: String,
    /// Every node of a cluster, `addr` among them; empty for one server.
    pub(crate) nodes: Vec<String>,
    pub(crate) user: String,
    pub(crate) token: String,
    pub(crate) client_name: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) queue_size: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) stream_capacity: usize,
    pub(crate) max_frame_len: u32,
    pub(crate) local_ip: Option<std::net::IpAddr>,
    /// TLS, when the server speaks it.
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) token_source: Option<crate::token::TokenSource>,
    pub(crate) outbox_messages: usize,
    pub(crate) outbox_bytes: usize,
    pub(crate) give_up_after: Duration,
}

impl ClientBuilder {
    pub(crate) fn new(addr: impl Into<String>) -> Self {
        ClientBuilder {
            addr: addr.into(),
            nodes: Vec::new(),
            user: String::new(),
            token: String::new(),
            client_name: concat!("apm-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            heartbeat: None,
            reconnect: ReconnectPolicy::default(),
            queue_size: 1024,
            backpressure: Backpressure::Wait,
            stream_capacity: 4096,
            max_frame_len: apm_core::Limits::DEFAULT_MAX_FRAME_LEN,
            local_ip: None,
            tls: None,
            token_source: None,
            outbox_messages: 4096,
            outbox_bytes: 16 * 1024 * 1024,
            give_up_after: Duration::from_secs(300),
        }
    }

    /// The nodes of an apm cluster (`host:port` each; the address given
    /// to [`Client::builder`](crate::Client::builder) is replaced by the
    /// first). The client connects to the first that answers and, when
    /// its connection is lost or its node stops (`server_shutdown`),
    /// tries the next ones in turn: every subscription resumes from its
    /// last seq there, with no gap and no duplicate, and messages waiting
    /// for receipts are sent again (the cluster recognises them).
    pub fn nodes<I, S>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = addrs.into_iter().map(Into::into).collect();
        if let Some(first) = nodes.first() {
            self.addr = first.clone();
            self.nodes = nodes;
        }
        self
    }

    /// Moves to the next node of a cluster; nothing for one server.
    pub(crate) fn next_node(&mut self) {
        if self.nodes.len() > 1 {
            let at = self.nodes.iter().position(|n| *n == self.addr).unwrap_or(0);
            self.addr = self.nodes[(at + 1) % self.nodes.len()].clone();
        }
    }

    /// How many nodes a first connection may try.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len().max(1)
    }

    /// The user id and token. On a dev-mode server the token may be empty;
    /// with a token the user may be empty (the token names it).
    pub fn credentials(mut self, user: impl Into<String>, token: impl Into<String>) -> Self {
        self.user = user.into();
        self.token = token.into();
        self
    }

    /// Where new tokens come from: called before the token in use expires
    /// (the session takes the new one without reconnecting, on servers
    /// that offer it), when a reconnect finds the token expired, and at
    /// the first connect if no token was given. An error is retried
    /// later; the connection closes when the token runs out meanwhile.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), apm_client::Error> {
    /// let client = apm_client::Client::builder("127.0.0.1:7600")
    ///     .token_refresh(|| async {
    ///         // Ask the app's backend for a token; here, a fixed one.
    ///         Ok::<_, Box<dyn std::error::Error + Send + Sync>>("TOKEN".to_owned())
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn token_refresh<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::TokenResult> + Send + 'static,
    {
        self.token_source = Some(crate::token::TokenSource::new(f));
        self
    }

    /// A name and version for the server's logs.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// How long connecting plus the handshake may take (default 5 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How long a request waits for its reply (default 10 s). A message
    /// sent with a receipt counts only time spent on one connection: it is
    /// sent again after a reconnect, so while the server is away it waits
    /// for it to come back, up to the give-up time
    /// ([`give_up_after`](ClientBuilder::give_up_after)).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// How often to ping an otherwise quiet connection (default: the
    /// interval the server suggests in its Welcome). A connection that hears
    /// nothing for three intervals is taken as dead and reconnected.
    pub fn heartbeat(mut self, t: Duration) -> Self {
        self.heartbeat = Some(t);
        self
    }

    /// How to reconnect (default: forever, 100 ms doubling to 10 s).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Commands that may wait for the connection task (default 1024).
    pub fn queue_size(mut self, n: usize) -> Self {
        self.queue_size = n.max(1);
        self
    }

    /// What a call does when the send queue is full (default: wait).
    pub fn backpressure(mut self, b: Backpressure) -> Self {
        self.backpressure = b;
        self
    }

    /// Messages a subscription or the inbox buffers before it drops
    /// (default 4096), not counting the batch of up to 256 the app's
    /// stream has taken and not yet handed out. Drops are reported as
    /// [`crate::Event::Lagged`].
    pub fn stream_capacity(mut self, n: usize) -> Self {
        self.stream_capacity = n.max(1);
        self
    }

    /// How many messages sent with a receipt may wait for it, and how many
    /// payload bytes they may hold together (default 4,096 and 16 MiB).
    /// They wait across reconnects and go out again in order; a send past
    /// either bound fails at once with
    /// [`Error::OutboxFull`](crate::Error::OutboxFull).
    pub fn outbox(mut self, messages: usize, bytes: usize) -> Self {
        self.outbox_messages = messages.max(1);
        self.outbox_bytes = bytes;
        self
    }

    /// How long a message sent with a receipt may wait for it, reconnects
    /// included, before its send fails with
    /// [`Error::GaveUp`](crate::Error::GaveUp) (default 5 minutes). Keep
    /// it under the server's `dedup_keep_secs` (10 minutes by default), so
    /// a copy sent again before giving up is still recognised.
    pub fn give_up_after(mut self, t: Duration) -> Self {
        self.give_up_after = t;
        self
    }

    /// Connects from this local address (any port), for hosts with several
    /// interfaces.
    pub fn local_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// Connects over TLS, trusting the operating system's root
    /// certificates. The server's certificate must name the address's host
    /// (a DNS name or an IP address), or the name given to
    /// [`ClientBuilder::tls_server_name`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(token: String) -> Result<(), apm_client::Error> {
    /// let client = apm_client::Client::builder("push.example.com:7600")
    ///     .tls()
    ///     .credentials("", token)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls(mut self) -> Self {
        let name = self
            .tls
            .take()
            .and_then(|t| t.server_name().map(str::to_owned));
        let mut tls = TlsOptions::system();
        if let Some(name) = name {
            tls.set_server_name(name);
        }
        self.tls = Some(tls);
        self
    }

    /// Connects over TLS, trusting only the CA certificates in `pem` (PEM
    /// text with one or more `CERTIFICATE` sections): a private CA's, or a
    /// self-signed server certificate itself. A PEM that holds none fails
    /// the connect with [`Error::Tls`](crate::Error::Tls).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("ca.pem")?;
    /// let client = apm_client::Client::builder("10.0.0.5:7600")
    ///     .tls_ca_pem(ca)
    ///     .tls_server_name("push.internal")
    ///     .credentials("alice", "")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        let name = self
            .tls
            .take()
            .and_then(|t| t.server_name().map(str::to_owned));
        let mut tls = TlsOptions::with_ca_pem(pem.into());
        if let Some(name) = name {
            tls.set_server_name(name);
        }
        self.tls = Some(tls);
        self
    }

    /// The name the server's certificate must carry, when it is not the
    /// address's host (an address given by IP for a certificate issued to
    /// a DNS name). Turns TLS on, with the system's roots unless
    /// [`ClientBuilder::tls_ca_pem`] gives a CA.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls
            .get_or_insert_with(TlsOptions::system)
            .set_server_name(name.into());
        self
    }
}
