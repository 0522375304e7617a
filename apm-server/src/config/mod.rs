//! Server settings: built-in defaults, overridden by a TOML file, then by
//! environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod help;
mod http;
mod listen;
mod rates;

pub use http::{API_KEY_MIN, API_NAME_MAX, API_SENDER_PREFIX, ApiKey, HttpListen, check_api_name};

use crate::access::ChannelRules;
use crate::logs::LogFormat;
use crate::retention::{Retention, RetentionPolicy, pattern_matches};
use crate::store::StoreKind;

/// What to do with a message for a connection whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the connection with `slow_consumer` (nothing is silently lost).
    Disconnect,
    /// Drop the message for that connection and count it (QoS 0).
    Drop,
}

/// Client message ids one conversation keeps at most (about 100 bytes
/// each): past it, each sender keeps only its last `dedup_per_sender`.
const DEDUP_MAX_ENTRIES: usize = 16_384;

/// Why `http_tls` without a certificate is refused.
pub(crate) const HTTP_TLS_NEEDS_CERT: &str = "--http-tls needs --tls-cert and --tls-key: the HTTP listener serves the \
     client listener's certificate";

/// Who may send private messages (`Direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DirectMessages {
    /// Every session.
    Anyone,
    /// Sessions with the admin role only (a support desk, a backend).
    Admins,
    /// Nobody: `Direct` is refused with `forbidden`.
    Off,
}

/// Each setting once: its doc, environment variable, type and default;
/// `@[...]` adds attributes to its flag and file key only (a parser of
/// its own).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $(@[$given:meta])*
        $name:ident ($env:literal) : $ty:ty = $default:expr;
    )*) => {
        /// The server's settings, all resolved.
        #[derive(Debug, Clone)]
        pub struct Config {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)* }
            }
        }

        /// Settings given in a file or on the command line; unset ones keep
        /// the value from the layer below.
        #[derive(Debug, Clone, Default, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct Overrides {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env)]
                #[serde(default)]
                $(#[$given])*
                pub $name: Option<$ty>,
            )*
        }

        impl Config {
            /// Applies every setting `o` has.
            pub fn apply(&mut self, o: Overrides) {
                $(if let Some(v) = o.$name { self.$name = v; })*
            }
        }

        impl Overrides {
            /// `command`, into which these settings are flattened, with
            /// each one's built-in default shown in its help. Parse with
            /// it, then call [`Overrides::forget_defaults`].
            pub fn show_defaults(mut command: clap::Command) -> clap::Command {
                let defaults = Config::default();
                $(
                    let shown = help::Shown::shown(&defaults.$name);
                    if !shown.is_empty() {
                        command = command.mut_arg(stringify!($name), |a| a.default_values(shown));
                    }
                )*
                command
            }

            /// Unsets what clap filled in from the defaults
            /// [`Overrides::show_defaults`] gave it, so that a setting
            /// neither flag nor environment gave keeps the file's value.
            pub fn forget_defaults(&mut self, matches: &clap::ArgMatches) {
                $(
                    if matches.value_source(stringify!($name))
                        == Some(clap::parser::ValueSource::DefaultValue)
                    {
                        self.$name = None;
                    }
                )*
            }
        }
    };
}

settings! {
    /// Address to listen on for clients: `IP:PORT`, or `HOST:PORT` resolved
    /// at start (to its first IPv4 address, else its first). Without a
    /// secret only a loopback address is allowed.
    @[arg(value_parser = listen::parse)]
    @[serde(deserialize_with = "listen::deserialize")]
    listen ("APM_LISTEN"): SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7600));
    /// HMAC-SHA256 secret for client tokens, at least 16 bytes. Without one
    /// the server runs in dev mode (any user id accepted), which it allows
    /// only on loopback.
    secret ("APM_SECRET"): String = String::new();
    /// Accept any user id without a token even when not bound to loopback.
    /// Insecure: for trusted test networks only.
    allow_dev_mode ("APM_ALLOW_DEV_MODE"): bool = false;
    /// PEM file with the certificate chain (server's first) clients are
    /// shown: set with `tls_key` to serve clients over TLS (and the HTTP
    /// listener, with `http_tls`). Both files are read again on SIGHUP.
    /// None by default (plain TCP).
    tls_cert ("APM_TLS_CERT"): PathBuf = PathBuf::new();
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1). None by default.
    tls_key ("APM_TLS_KEY"): PathBuf = PathBuf::new();
    /// Number of forwarding loops (shards); 0 means one per core.
    shards ("APM_SHARDS"): usize = 0;
    /// Largest frame accepted, in bytes (length prefix value).
    max_frame_len ("APM_MAX_FRAME_LEN"): u32 = apm_core::Limits::DEFAULT_MAX_FRAME_LEN;
    /// Longest channel name or user id, in bytes.
    max_name_len ("APM_MAX_NAME_LEN"): usize = apm_core::Limits::DEFAULT_MAX_NAME_LEN;
    /// Subscriptions one connection may hold.
    max_subscriptions ("APM_MAX_SUBSCRIPTIONS"): usize = 1024;
    /// Connections in total; 0 means the open-file limit less a reserve.
    max_connections ("APM_MAX_CONNECTIONS"): usize = 0;
    /// Connections one user may hold at once.
    max_connections_per_user ("APM_MAX_CONNECTIONS_PER_USER"): usize = 64;
    /// Frames queued for one connection before it is a slow consumer.
    outbound_queue ("APM_OUTBOUND_QUEUE"): usize = 4096;
    /// Bytes queued for one connection before it is a slow consumer.
    outbound_bytes ("APM_OUTBOUND_BYTES"): usize = 8 * 1024 * 1024;
    /// What happens to a slow consumer.
    slow_consumer ("APM_SLOW_CONSUMER"): SlowConsumerPolicy = SlowConsumerPolicy::Disconnect;
    /// Kernel send buffer per client socket (SO_SNDBUF) in bytes; 0 leaves
    /// the OS default. A small one bounds kernel memory per connection and
    /// finds slow consumers sooner.
    socket_send_buffer ("APM_SOCKET_SEND_BUFFER"): usize = 0;
    /// Commands queued for one forwarding loop before readers wait.
    ingress_queue ("APM_INGRESS_QUEUE"): usize = 65_536;
    /// Memory, in bytes, that clients may make the server hold; the
    /// per-connection budgets below are derived from it unless set.
    memory_budget ("APM_MEMORY_BUDGET"): usize = 512 * 1024 * 1024;
    /// Bytes of one connection's requests on their way to the shards
    /// before its requests are no longer read (a message costs its payload
    /// plus 4 KiB; a history request or a resume the most its answer can
    /// take); 0 derives it from the memory budget (1/512 of it).
    ingress_allowance ("APM_INGRESS_ALLOWANCE"): usize = 0;
    /// Bytes of answers (receipts, history pages, replays, presence)
    /// waiting for one connection before its requests are no longer read;
    /// 0 derives it from the memory budget (1/512 of it).
    reply_budget ("APM_REPLY_BUDGET"): usize = 0;
    /// Milliseconds a new connection has to send Hello.
    handshake_timeout_ms ("APM_HANDSHAKE_TIMEOUT_MS"): u64 = 5_000;
    /// Milliseconds without any frame from a client before it is closed.
    idle_timeout_ms ("APM_IDLE_TIMEOUT_MS"): u64 = 60_000;
    /// Heartbeat interval suggested to clients, in milliseconds.
    heartbeat_ms ("APM_HEARTBEAT_MS"): u64 = 20_000;
    /// Deliver a publisher's own messages back to it.
    echo ("APM_ECHO"): bool = false;
    /// Channel patterns whose members get join/leave events: exact names, or
    /// a prefix ending in `*` (`*` alone is every channel).
    join_leave_channels ("APM_JOIN_LEAVE_CHANNELS"): Vec<String> = vec!["*".to_owned()];
    /// Channels with more members than this send no join/leave events:
    /// each event goes to every member, so in a large channel they would
    /// cost the square of its size.
    join_leave_max_members ("APM_JOIN_LEAVE_MAX_MEMBERS"): usize = 100;
    /// Milliseconds after a start during which users who were online when
    /// the last run shut down gracefully (disk store) may come back
    /// without being announced as coming online or joining again; whoever
    /// has not come back by then is announced as gone.
    presence_grace_ms ("APM_PRESENCE_GRACE_MS"): u64 = 30_000;
    /// Where messages are kept: `disk` (an embedded database in
    /// `data_dir`, fsync'd per batch: history survives restarts and a
    /// receipt means the message is on disk) or `memory` (history lasts as
    /// long as the process; a receipt means the message is sequenced).
    store ("APM_STORE"): StoreKind = StoreKind::Disk;
    /// Directory of the disk store. A relative path (the default one
    /// included) is taken from the working directory; the absolute path is
    /// logged at start.
    data_dir ("APM_DATA_DIR"): PathBuf = PathBuf::from("apm-data");
    /// Messages waiting for the disk before publishers wait.
    store_backlog ("APM_STORE_BACKLOG"): usize = 65_536;
    /// Messages kept per conversation (channel, user inbox, broadcasts) for
    /// resume, history and offline delivery; 0 keeps none.
    history_max_messages ("APM_HISTORY_MAX_MESSAGES"): usize = 1000;
    /// Seconds a message is kept; 0 means no age limit.
    history_max_age_secs ("APM_HISTORY_MAX_AGE_SECS"): u64 = 86_400;
    /// Bytes of history one conversation keeps in memory, oldest dropped
    /// first. With the disk store what is past it is read from disk; with
    /// the memory store it is gone. 0 derives it from the memory budget
    /// (1/64 of it).
    history_max_bytes ("APM_HISTORY_MAX_BYTES"): usize = 0;
    /// Bytes of history all conversations keep in memory together; past it
    /// the server's oldest retained messages leave memory first (with the
    /// disk store they are still read from disk). 0 derives it from the
    /// memory budget (1/4 of it).
    history_total_bytes ("APM_HISTORY_TOTAL_BYTES"): usize = 0;
    /// Conversations (channels, user inboxes) kept in memory; past it idle
    /// ones (no member, owner not connected) leave memory, least recently
    /// used first, and are read back from the store when used again. 0
    /// derives it from the memory budget (one per 4 KiB of it).
    max_conversations ("APM_MAX_CONVERSATIONS"): usize = 0;
    /// Retention for channels by name, overriding the two settings above:
    /// `PATTERN=MESSAGES:SECONDS`, where PATTERN is a channel name or a
    /// prefix ending in `*` (`room.*=100:3600`). The first matching rule
    /// wins; inboxes and broadcasts keep the defaults.
    history_rules ("APM_HISTORY_RULES"): Vec<String> = Vec::new();
    /// Client message ids each sender keeps per conversation, whatever
    /// their age: a message with the same sender and `msg_id` as a kept one
    /// is a retry, answered with the first copy's receipt and not stored
    /// again. 0 turns de-duplication off.
    dedup_per_sender ("APM_DEDUP_PER_SENDER"): usize = 64;
    /// Seconds for which every client message id is kept, however many a
    /// sender sent (beyond `dedup_per_sender`); a client's outbox should
    /// give up on a message sooner.
    dedup_keep_secs ("APM_DEDUP_KEEP_SECS"): u64 = 600;
    /// Largest page a history request returns.
    history_page_max ("APM_HISTORY_PAGE_MAX"): u32 = 100;
    /// Most conversations one unread-count request is answered for.
    unread_page_max ("APM_UNREAD_PAGE_MAX"): u32 = 1000;
    /// Largest page a presence query returns.
    presence_page_max ("APM_PRESENCE_PAGE_MAX"): u32 = 1000;
    /// Members above which a fan-out is split across threads.
    fanout_parallel_threshold ("APM_FANOUT_PARALLEL_THRESHOLD"): usize = 65_536;
    /// Milliseconds a graceful shutdown waits for connections to drain.
    shutdown_timeout_ms ("APM_SHUTDOWN_TIMEOUT_MS"): u64 = 5_000;
    /// Who may use channels, by name: `PATTERN=ACCESS[:PUBLISHERS]`,
    /// PATTERN as in history rules, ACCESS `public` (the default) or
    /// `members` (subscribing, publishing, history, unread counts and
    /// member lists need a claim to the channel in the token), PUBLISHERS
    /// `anyone`, `members`, `subscribers` or `admins`
    /// (`private.*=members`, `news=public:admins`). The first matching rule
    /// wins; admin sessions pass every rule; none by default.
    channel_rules ("APM_CHANNEL_RULES"): Vec<String> = Vec::new();
    /// Who may send private messages: `anyone`, `admins` or `off`.
    direct_messages ("APM_DIRECT_MESSAGES"): DirectMessages = DirectMessages::Anyone;
    /// Messages (publishes, private messages, broadcasts) one connection
    /// may send: `RATE:BURST`, RATE a second on average and up to BURST at
    /// once, or `off`. One over is refused with `rate_limited`, saying when
    /// to retry; the connection stays open.
    rate_limit_connection ("APM_RATE_LIMIT_CONNECTION"): String = "20:40".to_owned();
    /// Messages one user may send over all its connections: `RATE:BURST`
    /// or `off`.
    rate_limit_user ("APM_RATE_LIMIT_USER"): String = "40:40".to_owned();
    /// Messages one user may send into one channel: `RATE:BURST` or `off`
    /// (channels no rate rule names).
    rate_limit_channel ("APM_RATE_LIMIT_CHANNEL"): String = "10:10".to_owned();
    /// Rates into channels by name, overriding the setting above:
    /// `PATTERN=RATE:BURST` or `PATTERN=off`, PATTERN as in history rules
    /// (`room.*=5:10`). The first matching rule wins; none by default.
    rate_limit_channel_rules ("APM_RATE_LIMIT_CHANNEL_RULES"): Vec<String> = Vec::new();
    /// Private messages one user may send to one recipient: `RATE:BURST`
    /// or `off`.
    rate_limit_direct ("APM_RATE_LIMIT_DIRECT"): String = "10:10".to_owned();
    /// Messages one admin user may send over all its connections, in place
    /// of every limit above (which do not apply to admin sessions):
    /// `RATE:BURST` or `off`.
    rate_limit_admin ("APM_RATE_LIMIT_ADMIN"): String = "1000:2000".to_owned();
    /// How log lines are written (on standard error): `text`, or `json`
    /// for one JSON object per line. `RUST_LOG` sets the level.
    log_format ("APM_LOG_FORMAT"): LogFormat = LogFormat::Text;
    /// Address of the HTTP listener: the API for backends under `/api/`
    /// (API key needed), and `/metrics`, `/healthz`, `/readyz` (no key).
    /// `IP:PORT`, `HOST:PORT`, or `off`.
    @[arg(value_parser = http::parse_listen)]
    @[serde(deserialize_with = "http::deserialize_listen")]
    http_listen ("APM_HTTP_LISTEN"): HttpListen = HttpListen(None);
    /// Serve the HTTP listener over TLS (HTTPS, HTTP/2 and HTTP/1.1) with
    /// the certificate of `tls_cert` and `tls_key`, which it needs; a
    /// SIGHUP reloads it for both listeners. `--http-tls` alone means
    /// true.
    @[arg(num_args = 0..=1, default_missing_value = "true")]
    http_tls ("APM_HTTP_TLS"): bool = false;
    /// Cluster mode: the Redis URL (`redis://HOST:PORT`) this node shares
    /// with the others, or several comma-separated (the same list, in the
    /// same order, on every node): each conversation lives on one of them,
    /// by consistent hash; presence, revocations and server-side
    /// subscriptions on the first. Redis sequences every conversation and
    /// keeps its messages (the store setting is not used). Empty: one
    /// node.
    cluster ("APM_CLUSTER"): String = String::new();
    /// Cluster mode: milliseconds a node's presence outlives its last
    /// word with Redis. Nodes renew it every third of that; a node killed
    /// has its users announced offline (where no other node holds them)
    /// within about 1.3 times this, and a node that stops gracefully
    /// leaves its users to this lease, so that those who move to another
    /// node meanwhile are not announced as leaving and coming back.
    presence_ttl_ms ("APM_PRESENCE_TTL_MS"): u64 = 10_000;
    /// An API key, `NAME=KEY` (KEY at least 16 bytes); repeat for several.
    /// NAME is logged and names the default sender (`$api/NAME`). Keys
    /// given here show in the process list: prefer `--api-keys-file`.
    @[arg(long = "api-key")]
    api_keys ("APM_API_KEYS"): Vec<String> = Vec::new();
    /// A file of API keys, one `NAME=KEY` a line (`#` starts a comment).
    /// Read again when it changes (looked at once a second at most), so
    /// keys rotate without a restart.
    api_keys_file ("APM_API_KEYS_FILE"): PathBuf = PathBuf::new();
    /// Largest HTTP request body, in bytes.
    http_max_body ("APM_HTTP_MAX_BODY"): usize = 4 * 1024 * 1024;
    /// HTTP API requests served at once; more are refused with 503.
    http_concurrency ("APM_HTTP_CONCURRENCY"): usize = 256;
    /// Milliseconds an HTTP API request may take before it is answered 503.
    http_timeout_ms ("APM_HTTP_TIMEOUT_MS"): u64 = 10_000;
}

impl Config {
    /// Loads `path` as TOML over the defaults.
    pub fn from_file(path: &PathBuf) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            source: e,
        })?;
        let overrides: Overrides = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let mut config = Config::default();
        config.apply(overrides);
        Ok(config)
    }

    /// Shard count after resolving 0 to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Whether clients authenticate without tokens.
    pub fn dev_mode(&self) -> bool {
        self.secret.is_empty()
    }

    /// Whether clients connect over TLS.
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }

    /// Checks the settings that can be judged on their own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Invalid(why.to_owned()));
        if self.tls_cert.as_os_str().is_empty() != self.tls_key.as_os_str().is_empty() {
            return bad("tls_cert and tls_key go together: set both for TLS, or neither");
        }
        if self.dev_mode() && !self.listen.ip().is_loopback() {
            if !self.allow_dev_mode {
                return bad(
                    "no secret is set, so clients would authenticate without tokens; \
                     set --secret, bind to loopback, or pass --allow-dev-mode true (with TLS)",
                );
            }
            // User ids are all a dev-mode server checks: in clear text,
            // anyone on the path could read and replay them.
            if !self.tls_enabled() {
                return bad(&format!(
                    "dev mode (no secret) on the non-loopback address {} needs TLS: \
                     set --tls-cert and --tls-key, set --secret, or bind to loopback",
                    self.listen
                ));
            }
        }
        if !self.secret.is_empty() && self.secret.len() < crate::auth::MIN_SECRET_LEN {
            return bad(&format!(
                "the secret must be at least {} bytes",
                crate::auth::MIN_SECRET_LEN
            ));
        }
        if self.presence_ttl_ms < 300 {
            return bad("presence_ttl_ms must be at least 300");
        }
        if !self.cluster.is_empty() {
            for url in self.cluster.split(',').map(str::trim) {
                if !url.starts_with("redis://") {
                    return bad(&format!(
                        "cluster: {url:?} is not a redis://HOST:PORT URL (several instances go \
                         comma-separated; Redis Cluster is not supported)"
                    ));
                }
            }
        }
        if self.max_frame_len < 64 {
            return bad("max_frame_len must be at least 64");
        }
        if self.outbound_queue == 0 || self.ingress_queue == 0 || self.store_backlog == 0 {
            return bad("queue sizes must be positive");
        }
        if self.handshake_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return bad("timeouts must be positive");
        }
        self.retention_policy()?;
        self.rate_policy()?;
        self.channel_rules()?;
        self.check_http()?;
        Ok(())
    }

    /// The API keys given inline (`--api-key`).
    pub fn inline_api_keys(&self) -> Result<Vec<ApiKey>, ConfigError> {
        self.api_keys
            .iter()
            .map(|k| ApiKey::parse(k).map_err(ConfigError::Invalid))
            .collect()
    }

    /// Whether the HTTP API answers without a key: only with no key
    /// configured, on a loopback address, in dev mode. Then every local
    /// process may already connect as any user, and a key would only slow
    /// down trying the API out.
    pub fn http_open(&self) -> bool {
        self.api_keys.is_empty()
            && self.api_keys_file.as_os_str().is_empty()
            && self.dev_mode()
            && self.http_listen.0.is_some_and(|a| a.ip().is_loopback())
    }

    /// Checks the HTTP settings: keys well formed, and none missing where
    /// the API would be open to the network.
    fn check_http(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Invalid(why.to_owned()));
        self.inline_api_keys()?;
        if self.http_tls && !self.tls_enabled() {
            return bad(HTTP_TLS_NEEDS_CERT);
        }
        let Some(addr) = self.http_listen.0 else {
            return Ok(());
        };
        if self.http_max_body == 0 || self.http_concurrency == 0 || self.http_timeout_ms == 0 {
            return bad("http_max_body, http_concurrency and http_timeout_ms must be positive");
        }
        if self.api_keys.is_empty()
            && self.api_keys_file.as_os_str().is_empty()
            && !self.http_open()
        {
            return bad(&format!(
                "--http-listen {addr} needs an API key (--api-key NAME=KEY or \
                 --api-keys-file PATH); only a loopback address in dev mode may go without"
            ));
        }
        Ok(())
    }

    /// Bytes of history one conversation keeps in memory.
    pub fn history_max_bytes(&self) -> usize {
        match self.history_max_bytes {
            0 => (self.memory_budget / 64).max(64 * 1024),
            n => n,
        }
    }

    /// Bytes of history all conversations keep in memory together.
    pub fn history_total_bytes(&self) -> usize {
        match self.history_total_bytes {
            0 => (self.memory_budget / 4).max(1024 * 1024),
            n => n,
        }
    }

    /// Conversations kept in memory, all shards together.
    pub fn max_conversations(&self) -> usize {
        match self.max_conversations {
            0 => (self.memory_budget / 4096).max(1024),
            n => n,
        }
    }

    /// One connection's ingress allowance in bytes.
    pub fn ingress_allowance(&self) -> usize {
        match self.ingress_allowance {
            0 => (self.memory_budget / 512).max(64 * 1024),
            n => n,
        }
    }

    /// One connection's reply budget in bytes.
    pub fn reply_budget(&self) -> usize {
        match self.reply_budget {
            0 => (self.memory_budget / 512).max(64 * 1024),
            n => n,
        }
    }

    /// The protocol limits the decoder enforces.
    pub fn limits(&self) -> apm_core::Limits {
        apm_core::Limits {
            max_frame_len: self.max_frame_len,
            max_name_len: self.max_name_len,
        }
    }

    /// How much each conversation remembers of client message ids.
    pub(crate) fn dedup_window(&self) -> crate::dedup::Window {
        crate::dedup::Window {
            per_sender: self.dedup_per_sender,
            keep_ms: self.dedup_keep_secs.saturating_mul(1000),
            max_entries: DEDUP_MAX_ENTRIES,
        }
    }

    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// How much history a conversation no rule names keeps.
    pub fn retention(&self) -> Retention {
        Retention {
            max_messages: self.history_max_messages,
            max_age_ms: self.history_max_age_secs.saturating_mul(1000),
            max_bytes: self.history_max_bytes(),
        }
    }

    /// How much history each conversation keeps, rules included.
    pub fn retention_policy(&self) -> Result<RetentionPolicy, ConfigError> {
        Ok(RetentionPolicy {
            default: self.retention(),
            rules: self
                .history_rules
                .iter()
                .map(|r| {
                    RetentionPolicy::parse_rule(r).map(|(pattern, keep)| {
                        let max_bytes = self.history_max_bytes();
                        (pattern, Retention { max_bytes, ..keep })
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(ConfigError::Invalid)?,
        })
    }

    /// Who may use which channel, read from `channel_rules`.
    pub fn channel_rules(&self) -> Result<ChannelRules, ConfigError> {
        ChannelRules::parse(&self.channel_rules).map_err(ConfigError::Invalid)
    }

    /// Whether `channel` emits join/leave events (never a `$` channel).
    pub fn join_leave_for(&self, channel: &str) -> bool {
        !apm_core::names::is_system_channel(channel)
            && self
                .join_leave_channels
                .iter()
                .any(|p| pattern_matches(p, channel))
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The store could not be opened or read back.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let o: Overrides = toml::from_str(
            "listen = \"127.0.0.1:9000\"\necho = true\njoin_leave_channels = [\"room.*\"]\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.apply(o);
        assert_eq!(c.listen.port(), 9000);
        assert!(c.echo);
        assert!(c.join_leave_for("room.1"));
        assert!(!c.join_leave_for("news"));
        c.apply(Overrides {
            echo: Some(false),
            ..Default::default()
        });
        assert!(!c.echo);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn cluster_urls_are_redis_instances() {
        let mut c = Config {
            cluster: "redis://127.0.0.1:6379, redis://127.0.0.1:6380".into(),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
        for bad in ["127.0.0.1:6379", "redis://a:1,", "redis+cluster://a:1"] {
            c.cluster = bad.into();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("Redis Cluster is not supported"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Overrides>("lisen = \"x\"").is_err());
    }

    #[test]
    fn the_http_api_needs_a_key_unless_local_in_dev_mode() {
        let mut c = Config {
            http_listen: HttpListen(Some("127.0.0.1:7680".parse().unwrap())),
            ..Config::default()
        };
        assert!(c.validate().is_ok() && c.http_open(), "loopback, dev mode");
        c.http_listen = HttpListen(Some("0.0.0.0:7680".parse().unwrap()));
        assert!(c.validate().is_err(), "open to the network");
        c.http_listen = HttpListen(Some("127.0.0.1:7680".parse().unwrap()));
        c.secret = "0123456789abcdef".into();
        assert!(
            c.validate().is_err(),
            "tokens for clients, none for the API"
        );
        c.api_keys = vec!["orders=0123456789abcdef".into()];
        assert!(c.validate().is_ok() && !c.http_open());
        c.api_keys = vec!["orders=short".into()];
        assert!(c.validate().is_err(), "a bad key is refused at start");
    }

    #[test]
    fn http_tls_needs_the_certificate_flags() {
        let mut c = Config {
            http_tls: true,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--http-tls") && e.contains("--tls-cert") && e.contains("--tls-key"),
            "{e}"
        );
        c.tls_cert = "cert.pem".into();
        c.tls_key = "key.pem".into();
        assert!(c.validate().is_ok());
        let o: Overrides = toml::from_str("http_tls = true\n").unwrap();
        assert_eq!(o.http_tls, Some(true));
    }

    #[test]
    fn dev_mode_only_on_loopback() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.listen = "0.0.0.0:7600".parse().unwrap();
        assert!(c.validate().is_err());
        c.secret = "0123456789abcdef".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn dev_mode_off_loopback_needs_tls_too() {
        let mut c = Config {
            listen: "0.0.0.0:7600".parse().unwrap(),
            allow_dev_mode: true,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("needs TLS") && e.contains("0.0.0.0:7600"), "{e}");
        c.tls_cert = "cert.pem".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        c.tls_key = "key.pem".into();
        assert!(c.validate().is_ok());
        c.allow_dev_mode = false;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--allow-dev-mode"), "{e}");
    }
}
