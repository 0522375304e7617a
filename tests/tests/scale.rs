//! Many connections at once.

use apm_core::Flags;
use apm_tests::TestServer;
use futures::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections() {
    let server = TestServer::start(|_| {}).await;
    let clients = join_all((0..1000).map(|i| {
        let server = &server;
        async move {
            let mut c = server.client(&format!("user{i}")).await;
            c.sub("everyone").await;
            c
        }
    }))
    .await;
    let mut publisher = server.client("announcer").await;
    publisher
        .publish("everyone", "hello, all", Flags::empty())
        .await;
    let received = join_all(clients.into_iter().map(|mut c| async move {
        let d = c.deliver().await;
        (d.seq, d.sender)
    }))
    .await;
    assert_eq!(received.len(), 1000);
    assert!(
        received
            .iter()
            .all(|(seq, s)| *seq == 1 && s == "announcer")
    );
}
