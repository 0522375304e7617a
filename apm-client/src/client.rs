//! The [`Client`] handle and its calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apm_core::message::{Role, content_kind};
use apm_core::{Flags, Frame, Message};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::builder::{Backpressure, ClientBuilder};
use crate::connector;
use crate::error::Error;
use crate::streams::{BatchReceiver, Event, Events, Inbox, ServerSubscriptions, Subscription};
use crate::task::{Command, SessionInfo, Task};

mod queries;
mod sending;

impl ClientBuilder {
    /// Connects and completes the handshake.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), apm_client::Error> {
    /// let client = apm_client::Client::builder("127.0.0.1:7600")
    ///     .credentials("alice", "")
    ///     .connect()
    ///     .await?;
    /// println!("connected as {}", client.user());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<Client, Error> {
        Client::connect(self).await
    }
}

/// Options for one outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// What the payload holds (see `apm_core::message::content_kind`);
    /// default binary.
    pub kind: u16,
    /// A client message id, echoed to receivers (0 for none). A message
    /// sent with a receipt gets a random one when this is 0: after a lost
    /// connection the SDK sends it again, and the server recognises the
    /// copy by (sender, id) and answers with the first copy's receipt.
    pub msg_id: u64,
    /// On a publish: deliver to this connection too.
    pub echo: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            kind: content_kind::BINARY,
            msg_id: 0,
            echo: false,
        }
    }
}

impl SendOptions {
    /// UTF-8 text.
    pub fn text() -> SendOptions {
        SendOptions {
            kind: content_kind::TEXT,
            ..Default::default()
        }
    }
}

/// One page of a presence listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, sorted.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Debug)]
struct Inner {
    cmds: mpsc::Sender<Command>,
    /// Weak, so the event streams end when the connection task does.
    events: broadcast::WeakSender<Event>,
    inbox: Mutex<Option<mpsc::Receiver<apm_core::message::Deliver>>>,
    server_subs: Mutex<Option<mpsc::Receiver<apm_core::message::Deliver>>>,
    session: Arc<Mutex<SessionInfo>>,
    closed: CancellationToken,
    backpressure: Backpressure,
    request_timeout: Duration,
    stream_capacity: usize,
    /// Messages waiting for receipts, bounded.
    outbox: crate::outbox::Outbox,
    give_up_after: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the connection task says Close and ends.
        self.closed.cancel();
    }
}

/// A connection to an apm server. Cheap to clone; every clone drives the
/// same connection, from any task. The connection closes when the last
/// clone (and the last [`Subscription`]) is dropped, or on [`Client::close`].
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), apm_client::Error> {
/// use apm_client::Client;
/// use futures::StreamExt;
///
/// let client = Client::builder("127.0.0.1:7600").credentials("alice", "").connect().await?;
/// let mut news = client.subscribe("news").await?;
/// let receipt = client.publish("news", "hello").await?;
/// println!("sequenced as #{}", receipt.seq);
/// while let Some(msg) = news.next().await {
///     println!("{}: {:?}", msg.sender, msg.payload);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts building a client for the server at `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(addr)
    }

    pub(crate) async fn connect(mut opts: ClientBuilder) -> Result<Client, Error> {
        connector::renew_if_stale(&mut opts).await?;
        let (io, welcome, capabilities) = connector::connect_any(&mut opts).await?;
        let (cmds_tx, cmds_rx) = mpsc::channel(opts.queue_size);
        let (events, _) = broadcast::channel(1024);
        let (inbox_tx, inbox_rx) = mpsc::channel(opts.stream_capacity);
        let (server_tx, server_rx) = mpsc::channel(opts.stream_capacity);
        let closed = CancellationToken::new();
        let session = Arc::new(Mutex::new(SessionInfo {
            welcome,
            capabilities,
            connected: true,
            reconnects: 0,
            node: opts.addr.clone(),
        }));
        let inner = Inner {
            cmds: cmds_tx,
            events: events.downgrade(),
            inbox: Mutex::new(Some(inbox_rx)),
            server_subs: Mutex::new(Some(server_rx)),
            session: session.clone(),
            closed: closed.clone(),
            backpressure: opts.backpressure,
            request_timeout: opts.request_timeout,
            stream_capacity: opts.stream_capacity,
            outbox: crate::outbox::Outbox::new(opts.outbox_messages, opts.outbox_bytes),
            give_up_after: opts.give_up_after,
        };
        let streams = crate::task::Sinks {
            inbox: inbox_tx,
            server: server_tx,
        };
        let task = Task::new(opts, cmds_rx, events, streams, closed, session);
        tokio::spawn(task.run(io));
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// The user this client is authenticated as.
    pub fn user(&self) -> String {
        self.session().welcome.user
    }

    /// The role of this client's session.
    pub fn role(&self) -> Role {
        self.session().welcome.role
    }

    /// Whether the client holds a welcomed connection now (false from a
    /// lost connection until the next handshake). What is sent meanwhile
    /// waits in the outbox.
    pub fn is_connected(&self) -> bool {
        self.session().connected
    }

    /// The node (`host:port`) the client connected to last: with
    /// [`ClientBuilder::nodes`](crate::ClientBuilder::nodes), the one it
    /// is on now.
    pub fn node(&self) -> String {
        self.session().node
    }

    /// The server's id for the current connection (changes on reconnect).
    pub fn session_id(&self) -> u64 {
        self.session().welcome.session_id
    }

    fn session(&self) -> SessionInfo {
        self.inner.session.lock().expect("session lock").clone()
    }

    async fn queue(&self, cmd: Command) -> Result<(), Error> {
        match self.inner.backpressure {
            Backpressure::Wait => self.inner.cmds.send(cmd).await.map_err(|_| Error::Closed),
            Backpressure::Fail => self.inner.cmds.try_send(cmd).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            }),
        }
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(result)) => result,
        }
    }

    async fn request(&self, message: Message, flags: Flags) -> Result<Frame, Error> {
        let (tx, rx) = oneshot::channel();
        self.queue(Command::Request {
            message,
            flags,
            reply: Some(tx),
        })
        .await?;
        self.wait(rx).await
    }

    /// Queues a frame that asks for no reply.
    async fn fire(&self, message: Message, flags: Flags) -> Result<(), Error> {
        self.queue(Command::Request {
            message,
            flags,
            reply: None,
        })
        .await
    }

    /// Hands the server a subscription token, minted by the app's backend,
    /// that lets this user use one members-only channel; answers the
    /// channel's name. The client keeps it and hands it over again after
    /// every reconnect, before re-joining its channels. Needs a server
    /// that offers subscription tokens (else [`Error::Server`] with
    /// `Unsupported`).
    pub async fn grant(&self, token: &str) -> Result<String, Error> {
        if !self
            .session()
            .capabilities
            .contains(apm_core::Capabilities::SUB_TOKEN)
        {
            return Err(Error::Server {
                code: apm_core::ErrorCode::Unsupported,
                message: "this server takes no subscription tokens".into(),
            });
        }
        let frame = self
            .request(
                Message::Grant(apm_core::message::Grant {
                    token: token.to_owned(),
                }),
                Flags::empty(),
            )
            .await?;
        match frame.message {
            Message::GrantOk(ok) => Ok(ok.channel),
            other => Err(unexpected(&other)),
        }
    }

    /// [`grant`](Client::grant) then [`subscribe`](Client::subscribe): joins
    /// a members-only channel on the strength of a subscription token.
    pub async fn subscribe_with_token(
        &self,
        channel: &str,
        token: &str,
    ) -> Result<Subscription, Error> {
        let granted = self.grant(token).await?;
        if granted != channel {
            return Err(Error::Server {
                code: apm_core::ErrorCode::Forbidden,
                message: format!("the subscription token is for #{granted}, not #{channel}"),
            });
        }
        self.subscribe(channel).await
    }

    /// Joins `channel`; resolves once the subscription is live.
    ///
    /// Subscribing again to a channel this client holds replaces the earlier
    /// [`Subscription`], whose stream ends.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::channel(self.inner.stream_capacity);
        let (reply, done) = oneshot::channel();
        self.queue(Command::Subscribe {
            channel: channel.to_owned(),
            tx,
            reply,
        })
        .await?;
        let ok = self.wait(done).await?;
        Ok(Subscription {
            channel: channel.to_owned(),
            last_seq_at_start: ok.seq,
            rx: BatchReceiver::new(rx),
            client: self.clone(),
        })
    }

    /// Leaves `channel`; resolves once the server confirms.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.queue(Command::Unsubscribe {
            channel: channel.to_owned(),
            reply: Some(tx),
        })
        .await?;
        self.wait(rx).await.map(|_| ())
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        self.request(Message::Ping, Flags::empty()).await?;
        Ok(start.elapsed())
    }

    /// Connection events from now on: presence news, disconnects,
    /// reconnects, drops.
    pub fn events(&self) -> Events {
        match self.inner.events.upgrade() {
            Some(tx) => Events::new(tx.subscribe()),
            // Closed already: a stream that ends at once.
            None => Events::new(broadcast::channel(1).1),
        }
    }

    /// The stream of private messages and broadcasts. Can be taken once.
    pub fn messages(&self) -> Result<Inbox, Error> {
        let rx = self
            .inner
            .inbox
            .lock()
            .expect("inbox lock")
            .take()
            .ok_or(Error::AlreadyTaken("the inbox"))?;
        Ok(Inbox {
            rx: BatchReceiver::new(rx),
            _client: self.clone(),
        })
    }

    /// The stream of messages of the channels the server subscribed this
    /// user to (server-side subscriptions, made by a backend through the
    /// HTTP API). Can be taken once. Which channels those are comes as
    /// [`Event::ServerSubscribed`] and [`Event::ServerUnsubscribed`].
    pub fn server_subscriptions(&self) -> Result<ServerSubscriptions, Error> {
        let rx = self
            .inner
            .server_subs
            .lock()
            .expect("server subscriptions lock")
            .take()
            .ok_or(Error::AlreadyTaken("the server-side subscriptions"))?;
        Ok(ServerSubscriptions {
            rx: BatchReceiver::new(rx),
            _client: self.clone(),
        })
    }

    /// Says goodbye to the server and closes the connection for every
    /// clone; waits until it is closed. Commands queued before it are sent
    /// first; a client that is reconnecting stops trying.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        let queued = tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.cmds.send(Command::Close { done }),
        )
        .await;
        if matches!(queued, Ok(Ok(()))) {
            // While reconnecting the task does not read commands: give it
            // the request timeout, then stop it directly.
            if tokio::time::timeout(self.inner.request_timeout, closed)
                .await
                .is_ok()
            {
                return;
            }
        }
        self.inner.closed.cancel();
    }
}

fn unexpected(message: &Message) -> Error {
    Error::Protocol(format!("unexpected reply {:?}", message.message_type()))
}
