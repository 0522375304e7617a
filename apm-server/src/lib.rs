//! The apm push server.
//!
//! Clients hold one TCP connection each and speak the protocol in
//! `apm-core`. Each connection is served by one task ([`connection`]) that
//! decodes frames into commands for the shard owning the channel or user
//! they name. Each shard runs one forwarding loop ([`shard`]) that alone
//! owns its tables, sequences its conversations, encodes each message once
//! and queues the same bytes to every member's bounded outbound queue
//! ([`outbox`]).
//!
//! # Examples
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use apm_server::{Config, Server};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::new(Config::default()).expect("valid config");
//! let shutdown = CancellationToken::new();
//! tokio::spawn(server.run(listener, shutdown.clone()));
//! // ... later:
//! shutdown.cancel();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod access;
pub mod auth;
mod clock;
mod cluster;
pub mod config;
mod connection;
pub mod conversation;
mod dedup;
pub mod fanout;
mod fast_map;
pub mod http;
mod hub;
mod ingress;
mod listener;
pub mod logs;
pub mod metrics;
pub mod outbox;
mod rate;
pub mod retention;
mod revocation;
pub mod ring;
mod server_subs;
mod shard;
pub mod store;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, ConfigError, Overrides};

use config::HTTP_TLS_NEEDS_CERT;
pub use logs::LogFormat;
pub use metrics::Metrics;
pub use store::StoreKind;
pub use tls::{TlsError, TlsReloader};

use hub::Hub;
use store::commit::{CommitQueue, CommitThread};
use store::{DiskStore, MemoryStore, Store};
use tls::Tls;

/// File descriptors kept back from the connection limit for the listener,
/// the runtime, storage and the brief socket used to refuse a connection.
const FD_RESERVE: usize = 64;

/// A configured server, ready to run on a listener.
#[derive(Debug)]
pub struct Server {
    hub: Arc<Hub>,
    /// TLS on the listener, when a certificate is configured.
    tls: Option<Tls>,
    /// The HTTP API's listener, keys and TLS, if it has one.
    http: Option<http::Listener>,
}

impl Server {
    /// Checks `config`, opens the store (reading back what it holds) and
    /// prepares the shards.
    pub fn new(config: Config) -> Result<Server, ConfigError> {
        config.validate()?;
        if !config.cluster.is_empty() {
            let store = Arc::new(cluster::RedisStore::open(&config.cluster)?);
            info!(
                epoch = store.epoch(),
                "cluster mode: Redis sequences and stores every conversation"
            );
            // Messages waiting for Redis draw from the memory budget.
            let lease = Duration::from_millis(config.presence_ttl_ms);
            let link = cluster::Cluster::new(&store, config.memory_budget / 8, lease);
            return Server::build(config, store, Some(link));
        }
        let store: Arc<dyn Store> = match config.store {
            StoreKind::Memory => Arc::new(MemoryStore::new()),
            StoreKind::Disk => Arc::new(DiskStore::open(&config.data_dir)?),
        };
        Server::with_store(config, store)
    }

    /// Like [`Server::new`], over a store of the caller's.
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Server, ConfigError> {
        Server::build(config, store, None)
    }

    fn build(
        config: Config,
        store: Arc<dyn Store>,
        cluster: Option<cluster::Cluster>,
    ) -> Result<Server, ConfigError> {
        config.validate()?;
        let tls = match config.tls_enabled() {
            true => Some(Tls::load(&config.tls_cert, &config.tls_key)?),
            false => None,
        };
        let recovered = store.recover(&config.retention_policy()?)?;
        let conversations = recovered.conversations.len();
        if conversations > 0 {
            info!(conversations, epoch = store.epoch(), "store read back");
        }
        Ok(Server {
            hub: Arc::new(Hub::new(
                config,
                Arc::new(Metrics::default()),
                store,
                recovered,
                cluster,
            )),
            tls,
            http: None,
        })
    }

    /// Reloads the TLS certificate and key from their files; `None` when
    /// the server runs without TLS. The handle outlives [`Server::run`]'s
    /// start, so a signal handler can keep it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example(server: &apm_server::Server) {
    /// if let Some(reloader) = server.tls_reloader() {
    ///     match reloader.reload() {
    ///         Ok(()) => println!("new certificate from {}", reloader.cert_path().display()),
    ///         Err(e) => eprintln!("kept the old certificate: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls.as_ref().map(Tls::reloader)
    }

    /// Serves the HTTP API, `/metrics`, `/healthz` and `/readyz` on
    /// `listener` too, from [`Server::run`] until shutdown, over TLS with
    /// the client listener's certificate when `http_tls` is set. Fails if
    /// the API keys file cannot be read or holds a bad line.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use apm_server::{Config, Server};
    /// use tokio::net::TcpListener;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// let config = Config {
    ///     http_listen: apm_server::config::HttpListen(Some("127.0.0.1:7680".parse()?)),
    ///     api_keys: vec!["orders=0123456789abcdef".into()],
    ///     ..Config::default()
    /// };
    /// let http = TcpListener::bind("127.0.0.1:7680").await?;
    /// let server = Server::new(config)?.with_http(http)?;
    /// let listener = TcpListener::bind("127.0.0.1:7600").await?;
    /// server.run(listener, CancellationToken::new()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_http(mut self, listener: TcpListener) -> Result<Server, ConfigError> {
        let keys = http::auth::ApiKeys::from_config(&self.hub.config)?;
        let tls = match (self.hub.config.http_tls, &self.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.http_acceptor()?),
            (true, None) => return Err(ConfigError::Invalid(HTTP_TLS_NEEDS_CERT.to_owned())),
        };
        self.http = Some(http::Listener {
            tcp: listener,
            keys,
            tls,
        });
        Ok(self)
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.hub.metrics.clone()
    }

    /// The connection limit in force: the configured one, or the open-file
    /// limit less a reserve.
    pub fn max_connections(&self) -> usize {
        let configured = self.hub.config.max_connections;
        let by_files = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _)) => (soft as usize).saturating_sub(FD_RESERVE),
            Err(_) => usize::MAX,
        };
        if configured == 0 {
            by_files
        } else {
            configured.min(by_files)
        }
    }

    /// Serves clients on `listener` until `shutdown` fires, then closes
    /// every connection with `ServerShutdown` after flushing what was queued
    /// for it, waiting at most the configured shutdown timeout.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let max_connections = self.max_connections();
        let tls = self.tls.as_ref().map(|t| t.acceptor().clone());
        let hub = self.hub;
        let http = self
            .http
            .map(|listener| http::start(listener, hub.clone(), shutdown.clone()));
        let commit_thread = match &hub.commit {
            Some(queue) => Some(
                CommitThread {
                    queue: queue.clone(),
                    shards: hub.shards.clone(),
                    metrics: hub.metrics.clone(),
                    retention: hub.retention.clone(),
                }
                .start()?,
            ),
            None => None,
        };
        // Make sure the commit thread ends even if this future is dropped
        // before the end.
        let _stop_commit = StopCommit(hub.commit.clone());
        let stop_shards = CancellationToken::new();
        let shards = TaskTracker::new();
        for index in 0..hub.shards.len() {
            shards.spawn(shard::run(hub.clone(), index, stop_shards.clone()));
        }
        shards.close();
        // Before the first client: a node takes messages only once it
        // hears what the others sequence.
        let finish_cluster = CancellationToken::new();
        let cluster_tasks = TaskTracker::new();
        cluster::start(&hub, &shutdown, &finish_cluster, &cluster_tasks).await?;
        cluster_tasks.close();
        let connections = TaskTracker::new();
        hub.accepting.store(true, Ordering::Release);
        listener::accept_loop(
            listener,
            hub.clone(),
            max_connections,
            tls,
            shutdown.clone(),
            connections.clone(),
        )
        .await;
        hub.accepting.store(false, Ordering::Release);
        connections.close();
        let grace = Duration::from_millis(hub.config.shutdown_timeout_ms) + Duration::from_secs(1);
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                "shutdown timeout: connections still open"
            );
        }
        if let Some(http) = http
            && tokio::time::timeout(grace, http).await.is_err()
        {
            warn!("shutdown timeout: HTTP requests still open");
        }
        // What the node took from its clients goes to Redis before the
        // shards stop (they hand the link's answers on).
        finish_cluster.cancel();
        if tokio::time::timeout(grace, cluster_tasks.wait())
            .await
            .is_err()
        {
            warn!("shutdown timeout: messages still waiting for the cluster's Redis");
        }
        stop_shards.cancel();
        shards.wait().await;
        if let (Some(queue), Some(thread)) = (&hub.commit, commit_thread) {
            // Whatever the loops handed over goes to disk before exit.
            queue.stop();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        hub.metrics.log_summary("stopped; counters since start");
        if hub.cluster.as_ref().is_some_and(|c| c.epoch_lost()) {
            // An error, so a supervisor restarts the node (in the new
            // epoch) even when it restarts only failed services.
            return Err(std::io::Error::other(
                "the cluster's Redis lost its data: restart to join its new epoch",
            ));
        }
        Ok(())
    }
}

/// Tells the commit thread to finish when dropped.
struct StopCommit(Option<Arc<CommitQueue>>);

impl Drop for StopCommit {
    fn drop(&mut self) {
        if let Some(queue) = &self.0 {
            queue.stop();
        }
    }
}

/// Raises the soft open-file limit to the hard limit, returning the new
/// soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
