//! Subscribes to a channel and prints every message that arrives, until
//! ctrl-c.
//!
//! ```text
//! cargo run -p apm-client --example subscriber -- [SERVER] [CHANNEL]
//! cargo run -p apm-client --example subscriber -- 127.0.0.1:7600 news
//! ```
//!
//! Connects as user `subscriber` (a dev-mode server accepts any name).
//! Reconnects are the SDK's business: it resumes from the last seq it saw.

use apm_client::{Client, Event};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), apm_client::Error> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7600".into());
    let channel = args.next().unwrap_or_else(|| "news".into());

    let client = Client::builder(server)
        .credentials("subscriber", "")
        .connect()
        .await?;
    let mut events = client.events();
    let mut messages = client.subscribe(&channel).await?;
    println!("subscribed to #{channel} at seq {}", messages.start_seq());
    loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(m) => println!(
                    "#{channel} seq {} from {}: {}",
                    m.seq,
                    m.sender,
                    String::from_utf8_lossy(&m.payload)
                ),
                None => break,
            },
            Some(event) = events.next() => match event {
                Event::Disconnected { reason } => println!("disconnected ({reason}), reconnecting"),
                Event::Reconnected => println!("reconnected"),
                Event::Lagged { stream, dropped } => println!("{stream}: {dropped} dropped"),
                Event::SubscriptionLost { channel, reason } => println!("lost #{channel}: {reason}"),
                Event::Closed => break,
                Event::ServerSubscribed { .. } | Event::ServerUnsubscribed { .. } => {}
                Event::Presence(_) => {}
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
