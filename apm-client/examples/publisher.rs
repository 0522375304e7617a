//! Publishes N text messages to a channel and prints each receipt's seq.
//!
//! ```text
//! cargo run -p apm-client --example publisher -- [SERVER] [CHANNEL] [N]
//! cargo run -p apm-client --example publisher -- 127.0.0.1:7600 news 5
//! ```
//!
//! Connects as user `publisher` (a dev-mode server accepts any name).

use apm_client::{Client, SendOptions};

#[tokio::main]
async fn main() -> Result<(), apm_client::Error> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7600".into());
    let channel = args.next().unwrap_or_else(|| "news".into());
    let count: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);

    let client = Client::builder(server)
        .credentials("publisher", "")
        .connect()
        .await?;
    for i in 1..=count {
        let text = format!("message {i} of {count}");
        let receipt = client
            .publish_with(&channel, text, SendOptions::text())
            .await?;
        println!("#{channel} seq {} (ts_ms {})", receipt.seq, receipt.ts_ms);
    }
    client.close().await;
    Ok(())
}
