//! The chat session: connects, reads commands from stdin line by line and
//! runs them one at a time, while background tasks print what arrives
//! (channel messages, private messages, presence and connection news) the
//! moment it arrives.
//!
//! Commands run in order, so a command's own output (e.g. the line you
//! said, printed once its receipt is back) comes out in input order.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use apm_client::{Client, Conversation, Error, Events, Page, SendOptions, content_kind};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::command::{self, Input};
use crate::render::{self, say};

/// Names asked for per presence page; the server caps it anyway.
const PAGE: u32 = 1000;

/// The most pages `/who` and `/online` fetch, a guard against a server
/// whose cursor does not advance.
const MAX_PAGES: usize = 10_000;

/// How long to wait, after closing, for the printers to show what was
/// already received.
const DRAIN: Duration = Duration::from_secs(2);

/// How the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `/quit`, end of input or ctrl-c: closed cleanly.
    Quit,
    /// The client closed for good on its own (reconnecting gave up).
    Lost,
}

/// Whether to keep reading input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// Who to connect as, and where.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// `host:port`.
    pub(crate) server: String,
    /// The user id (may be empty with a token).
    pub(crate) user: String,
    /// The token (empty in dev mode).
    pub(crate) token: String,
    /// Whether and how to speak TLS.
    pub(crate) tls: Tls,
}

/// TLS towards the server.
#[derive(Debug, Clone)]
pub(crate) enum Tls {
    /// Plain TCP.
    Off,
    /// TLS, trusting the system's root certificates.
    SystemRoots,
    /// TLS, trusting only the CA certificates in this PEM text.
    Ca(Vec<u8>),
}

struct Chat {
    client: Client,
    /// The user the server authenticated us as.
    me: String,
    /// Where plain text goes.
    current: Option<String>,
    /// Channels joined with `/join`.
    joined: BTreeSet<String>,
    /// The tasks printing the subscriptions and the inbox.
    printers: Vec<JoinHandle<()>>,
}

/// Connects and chats until the input ends, `/quit` or ctrl-c.
pub(crate) async fn run(login: Login) -> Result<Exit, Error> {
    let builder = Client::builder(login.server.clone())
        .credentials(login.user, login.token)
        .client_name(concat!("apm-demo/", env!("CARGO_PKG_VERSION")));
    let client = match login.tls {
        Tls::Off => builder,
        Tls::SystemRoots => builder.tls(),
        Tls::Ca(pem) => builder.tls_ca_pem(pem),
    }
    .connect()
    .await?;
    // Take the streams before subscribing anywhere, so no news is missed.
    let events = client.events();
    let inbox = client.messages()?;
    // Channels a backend subscribed this user to.
    let server_subs = client.server_subscriptions()?;
    // `$presence` carries who comes online and goes offline.
    let presence = client.subscribe("$presence").await?;
    let printers = vec![
        spawn_printer(client.clone(), inbox),
        spawn_printer(client.clone(), server_subs),
        spawn_printer(client.clone(), presence),
    ];
    let mut chat = Chat {
        me: client.user(),
        client,
        current: None,
        joined: BTreeSet::new(),
        printers,
    };
    let mut news = tokio::spawn(print_events(events));
    say(&format!(
        "* connected to {} as {} (type /help for commands)",
        login.server, chat.me
    ));

    // Ctrl-c closes as cleanly as /quit.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let exit = loop {
        tokio::select! {
            // `next_line` is cancel-safe: a line half-read when news comes
            // in is kept for the next call.
            line = lines.next_line() => match line {
                Ok(Some(line)) => match command::parse(&line) {
                    Ok(input) => {
                        if chat.handle(input).await == Flow::Quit {
                            break Exit::Quit;
                        }
                    }
                    Err(usage) => say(&format!("! {usage}")),
                },
                Ok(None) => break Exit::Quit,
                Err(e) => {
                    say(&format!("! cannot read input: {e}"));
                    break Exit::Quit;
                }
            },
            _ = &mut news => {
                say("! the connection is closed for good");
                break Exit::Lost;
            }
            _ = &mut ctrl_c => break Exit::Quit,
        }
    };
    chat.client.close().await;
    // Let everything already received reach the screen before saying bye.
    let printers = std::mem::take(&mut chat.printers);
    let _ = tokio::time::timeout(DRAIN, async move {
        for p in printers {
            let _ = p.await;
        }
        // On `Lost` it has finished, and a finished JoinHandle must not be
        // polled again.
        if exit == Exit::Quit {
            let _ = news.await;
        }
    })
    .await;
    if exit == Exit::Quit {
        say("* bye");
    }
    Ok(exit)
}

/// Prints every message of a subscription or the inbox until it ends, and
/// marks each read as it is shown: the read position is what `/unread` and
/// `/join` count from, on every device of the user.
fn spawn_printer(
    client: Client,
    mut stream: impl Stream<Item = apm_client::Deliver> + Send + Unpin + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(d) = stream.next().await {
            let line = render::deliver(&d);
            // Queued before the line shows, so a command typed after
            // seeing it counts the message as read.
            let _ = client.ack(d.conversation, d.seq).await;
            say(&line);
        }
    })
}

/// Prints connection news; returns once the client is closed for good.
async fn print_events(mut events: Events) {
    while let Some(e) = events.next().await {
        match render::event(&e) {
            Some(line) => say(&line),
            // `Closed`: nothing more will come.
            None => return,
        }
    }
}

impl Chat {
    async fn handle(&mut self, input: Input) -> Flow {
        match input {
            Input::Nothing => {}
            Input::Say(text) => self.say_in_current(text).await,
            Input::Join(channel) => self.join(channel).await,
            Input::Leave(channel) => self.leave(channel).await,
            Input::Msg { user, text } => self.msg(user, text).await,
            Input::Who(channel) => {
                let client = self.client.clone();
                let members = all_pages(|after| {
                    let (client, channel) = (client.clone(), channel.clone());
                    async move {
                        client
                            .channel_members(&channel, after.as_deref(), PAGE)
                            .await
                    }
                })
                .await;
                match members {
                    Ok(m) => say(&format!("* members of #{channel}: {}", render::names(&m))),
                    Err(e) => say(&format!("! who failed: {e}")),
                }
            }
            Input::Online => {
                let client = self.client.clone();
                let users = all_pages(|after| {
                    let client = client.clone();
                    async move { client.online_users(after.as_deref(), PAGE).await }
                })
                .await;
                match users {
                    Ok(u) => say(&format!("* online: {}", render::names(&u))),
                    Err(e) => say(&format!("! online failed: {e}")),
                }
            }
            Input::History { channel, limit } => self.history(channel, limit).await,
            Input::Unread => self.unread().await,
            Input::Help => {
                for line in command::HELP {
                    say(&format!("* {line}"));
                }
            }
            Input::Quit => return Flow::Quit,
        }
        Flow::Continue
    }

    /// Publishes to the current channel and shows the line once the server
    /// has sequenced it (the server does not echo it back to us). While
    /// the server is away the line shows as pending at once, and again as
    /// sent when the server has it; the prompt stays free meanwhile.
    async fn say_in_current(&mut self, text: String) {
        let Some(channel) = self.current.clone() else {
            say("! no current channel: /join one first");
            return;
        };
        let (client, me) = (self.client.clone(), self.me.clone());
        let send = async move {
            match client
                .publish_with(&channel, text.clone(), SendOptions::text())
                .await
            {
                Ok(receipt) => {
                    say(&render::channel_message(
                        receipt.ts_ms,
                        &channel,
                        &me,
                        content_kind::TEXT,
                        text.as_bytes(),
                    ));
                    // What you said yourself is read.
                    let _ = client.ack(receipt.conversation, receipt.seq).await;
                }
                Err(e) => say(&format!("! send failed: {e}")),
            }
        };
        self.send_or_queue(send, "your message").await;
    }

    /// Runs `send` now when connected; otherwise says it is pending and
    /// lets it finish in the background once the server is back.
    async fn send_or_queue(
        &mut self,
        send: impl std::future::Future<Output = ()> + Send + 'static,
        what: &str,
    ) {
        if self.client.is_connected() {
            send.await;
        } else {
            say(&format!(
                "* pending: {what} goes out when the server is back"
            ));
            tokio::spawn(send);
        }
    }

    async fn join(&mut self, channel: String) {
        // What came while this user was away (from any of its devices).
        let conversation = Conversation::Channel(channel.clone());
        if let Ok(counts) = self.client.unread(vec![conversation]).await
            && let Some(n) = counts.first().map(|u| u.count()).filter(|n| *n > 0)
        {
            say(&format!(
                "* #{channel}: {n} unread since you last read it (/history {channel} {n})"
            ));
        }
        match self.client.subscribe(&channel).await {
            Ok(sub) => {
                // Joining again replaces the subscription: the old printer
                // ends with the old stream.
                self.printers.retain(|p| !p.is_finished());
                self.printers.push(spawn_printer(self.client.clone(), sub));
                say(&format!("* joined #{channel}"));
                self.joined.insert(channel.clone());
                self.current = Some(channel);
            }
            Err(e) => say(&format!("! join failed: {e}")),
        }
    }

    async fn leave(&mut self, channel: String) {
        match self.client.unsubscribe(&channel).await {
            Ok(()) => {
                self.joined.remove(&channel);
                say(&format!("* left #{channel}"));
                if self.current.as_ref() == Some(&channel) {
                    // Talk in another joined channel, if there is one.
                    self.current = self.joined.last().cloned();
                    if let Some(now) = &self.current {
                        say(&format!("* now talking in #{now}"));
                    }
                }
            }
            Err(e) => say(&format!("! leave failed: {e}")),
        }
    }

    /// Sends a private message and shows it once the server took it (as
    /// pending first while the server is away).
    async fn msg(&mut self, user: String, text: String) {
        let (client, me) = (self.client.clone(), self.me.clone());
        let send = async move {
            match client
                .send_to_with(&user, text.clone(), SendOptions::text())
                .await
            {
                Ok(receipt) => say(&render::private_message(
                    receipt.ts_ms,
                    &me,
                    &user,
                    content_kind::TEXT,
                    text.as_bytes(),
                )),
                Err(e) => say(&format!("! send failed: {e}")),
            }
        };
        self.send_or_queue(send, "your private message").await;
    }

    /// Unread counts of the joined channels and the user's private inbox.
    async fn unread(&mut self) {
        let mut conversations: Vec<Conversation> = self
            .joined
            .iter()
            .map(|c| Conversation::Channel(c.clone()))
            .collect();
        conversations.push(Conversation::User(self.me.clone()));
        match self.client.unread(conversations).await {
            Ok(counts) => say(&format!("* unread: {}", render::unread(&counts))),
            Err(e) => say(&format!("! unread failed: {e}")),
        }
    }

    async fn history(&mut self, channel: String, limit: u32) {
        let answer = self
            .client
            .history(Conversation::Channel(channel.clone()), None, None, limit)
            .await;
        match answer {
            Ok(h) => {
                say(&format!(
                    "* history of #{channel}: {} messages (kept: seq {} to {})",
                    h.messages.len(),
                    h.oldest,
                    h.last
                ));
                for m in &h.messages {
                    say(&render::channel_message(
                        m.ts_ms, &channel, &m.sender, m.kind, &m.payload,
                    ));
                }
            }
            Err(e) => say(&format!("! history failed: {e}")),
        }
    }
}

/// Every page of a presence listing, concatenated.
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<String>, Error>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<String>, Error>>,
{
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let Page { items, next } = page(after.clone()).await?;
        all.extend(items);
        match next {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            _ => break,
        }
    }
    Ok(all)
}
