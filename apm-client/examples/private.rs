//! Private messages: sends one to a user (every device of theirs gets
//! it, and so do this user's other devices), then prints what arrives in
//! this user's own inbox, acknowledging each so it is not sent again.
//!
//! ```text
//! cargo run -p apm-client --example private -- [SERVER] [ME] [THEM]
//! ```

use apm_client::{Client, SendOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), apm_client::Error> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7600".into());
    let me = args.next().unwrap_or_else(|| "alice".into());
    let them = args.next().unwrap_or_else(|| "bob".into());

    let client = Client::builder(server)
        .credentials(&me, "")
        .connect()
        .await?;
    // Messages sent to this user while it was away come first.
    let mut inbox = client.messages()?;
    let receipt = client
        .send_to_with(&them, format!("hello {them}"), SendOptions::text())
        .await?;
    println!("sent: #{} in {them}'s inbox", receipt.seq);

    loop {
        tokio::select! {
            msg = inbox.next() => match msg {
                Some(m) => {
                    println!("from {}: {}", m.sender, String::from_utf8_lossy(&m.payload));
                    // Read: a later connection of this user is not sent it again.
                    client.ack(m.conversation, m.seq).await?;
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
