//! Graceful shutdown.

use std::time::Duration;

use apm_core::{ErrorCode, Flags, Message};
use apm_tests::TestServer;

#[tokio::test]
async fn shutdown_closes_everyone_and_returns() {
    let mut server = TestServer::start(|c| c.join_leave_channels.clear()).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut c = server.client(&format!("u{i}")).await;
        c.sub("x").await;
        clients.push(c);
    }
    // Something queued before the shutdown is still delivered.
    clients[0].publish("x", "last words", Flags::RECEIPT).await;
    let receipt = clients[0].recv().await;
    assert!(matches!(receipt.message, Message::Receipt(_)));
    server.shutdown.cancel();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut frames = Vec::new();
        while let Some(f) = c.next().await {
            frames.push(f.message);
        }
        let last = frames.pop().expect("a Close frame");
        assert!(matches!(last, Message::Close(ref b) if b.code == ErrorCode::ServerShutdown));
        if i > 0 {
            assert!(frames.iter().any(|m| matches!(m, Message::Deliver(_))));
        }
    }
    tokio::time::timeout(Duration::from_secs(10), &mut server.task)
        .await
        .expect("server stopped in time")
        .expect("task")
        .expect("clean exit");
}
