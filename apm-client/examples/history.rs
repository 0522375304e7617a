//! Reads a channel's history backwards, a page at a time, and shows how
//! many messages this user has not read there.
//!
//! ```text
//! cargo run -p apm-client --example history -- [SERVER] [CHANNEL]
//! ```

use apm_client::{Client, Conversation};

#[tokio::main]
async fn main() -> Result<(), apm_client::Error> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7600".into());
    let channel = args.next().unwrap_or_else(|| "news".into());

    let client = Client::builder(server)
        .credentials("reader", "")
        .connect()
        .await?;
    let conversation = Conversation::Channel(channel.clone());

    // Unread: the channel's last seq less how far this user acknowledged.
    let unread = client.unread(vec![conversation.clone()]).await?;
    if let Some(u) = unread.first() {
        println!("#{channel}: {} unread (last seq {})", u.count(), u.last);
    }

    // Newest page first, then the pages before it.
    let mut before = None;
    for _ in 0..3 {
        let page = client
            .history(conversation.clone(), before, None, 20)
            .await?;
        println!("-- page: seq {} to {} is kept --", page.oldest, page.last);
        for m in page.messages.iter().rev() {
            println!(
                "#{} {}: {}",
                m.seq,
                m.sender,
                String::from_utf8_lossy(&m.payload)
            );
        }
        match page.messages.first() {
            Some(first) if first.seq > page.oldest => before = Some(first.seq),
            _ => break,
        }
    }
    // Mark it all read.
    if let Some(u) = unread.first() {
        client.ack(conversation, u.last).await?;
    }
    client.close().await;
    Ok(())
}
