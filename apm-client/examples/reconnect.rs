//! Connection news: what the SDK reports while it loses the server and
//! comes back (restart the server while this runs). Messages published
//! with a receipt while the server is away wait in the outbox and go out
//! once it is back.
//!
//! ```text
//! cargo run -p apm-client --example reconnect -- [SERVER]
//! ```

use std::time::Duration;

use apm_client::{Client, Error, Event, ReconnectPolicy};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7600".into());
    let client = Client::builder(server)
        .credentials("steady", "")
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        })
        .give_up_after(Duration::from_secs(120))
        .connect()
        .await?;
    let mut events = client.events();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n = 0u64;
    loop {
        tokio::select! {
            Some(event) = events.next() => match event {
                Event::Disconnected { reason } => println!("lost the server ({reason}); reconnecting"),
                Event::Reconnected => println!("back: re-authenticated and re-subscribed"),
                Event::Lagged { stream, dropped } => println!("{stream}: {dropped} messages lost"),
                Event::SubscriptionLost { channel, reason } => println!("#{channel} not restored: {reason}"),
                Event::Closed => break,
                Event::ServerSubscribed { .. } | Event::ServerUnsubscribed { .. } => {}
                Event::Presence(_) => {}
            },
            _ = tick.tick() => {
                n += 1;
                let c = client.clone();
                // Resolves when the server has it, however long it is away
                // (up to the give-up time).
                tokio::spawn(async move {
                    match c.publish("heartbeats", format!("beat {n}")).await {
                        Ok(r) => println!("beat {n} stored as #{}", r.seq),
                        Err(e) => println!("beat {n}: {e}"),
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
