//! Watches who comes online and goes offline, and who joins and leaves a
//! channel; then asks who is online now.
//!
//! ```text
//! cargo run -p apm-client --example presence -- [SERVER] [CHANNEL]
//! ```

use apm_client::{Client, Event, PRESENCE_CHANNEL, PresenceEvent};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), apm_client::Error> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7600".into());
    let channel = args.next().unwrap_or_else(|| "lobby".into());

    let client = Client::builder(server)
        .credentials("watcher", "")
        .connect()
        .await?;
    let mut events = client.events();
    // Online and offline events come on `$presence`; joins and leaves to
    // the members of a channel. Both arrive as events, not messages.
    let _presence = client.subscribe(PRESENCE_CHANNEL).await?;
    let _room = client.subscribe(&channel).await?;

    let online = client.online_users(None, 100).await?;
    println!(
        "online now: {:?} (more: {})",
        online.items,
        online.next.is_some()
    );
    let members = client.channel_members(&channel, None, 100).await?;
    println!("in #{channel}: {:?}", members.items);

    loop {
        tokio::select! {
            Some(event) = events.next() => match event {
                Event::Presence(PresenceEvent::Online { user }) => println!("{user} is online"),
                Event::Presence(PresenceEvent::Offline { user }) => println!("{user} is offline"),
                Event::Presence(PresenceEvent::Join { channel, user }) => println!("{user} joined #{channel}"),
                Event::Presence(PresenceEvent::Leave { channel, user }) => println!("{user} left #{channel}"),
                Event::Closed => break,
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
