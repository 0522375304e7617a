//! Names that would look like another: a user id or channel with an
//! invisible character is refused with `invalid_name` and a close, and
//! nobody else notices.

use std::time::Duration;

use apm_core::message::{Hello, Sub};
use apm_core::{ErrorCode, Flags, Message};
use apm_tests::{Client, TestServer, token};

/// The `Error` that answers what `c` sent, then the close.
async fn refused(c: &mut Client) -> apm_core::message::ErrorBody {
    let f = c.recv().await;
    let Message::Error(e) = f.message else {
        panic!("expected Error, got {f:?}");
    };
    c.expect_eof().await;
    e
}

#[tokio::test]
async fn invisible_characters_are_invalid_names() {
    let server = TestServer::start(|_| {}).await;
    let mut bystander = server.client("bob").await;
    bystander.sub("news").await;

    // A user id with a zero width space: "alice" to the eye.
    let mut spoof = Client::connect(server.addr).await;
    spoof
        .send(Message::Hello(Hello {
            user: "alice\u{200b}".into(),
            token: String::new(),
            client: "t".into(),
        }))
        .await;
    let e = refused(&mut spoof).await;
    assert_eq!(e.code, ErrorCode::InvalidName, "{}", e.message);
    assert!(e.message.contains("alice\\u{200b}"), "{}", e.message);

    // A channel with a right-to-left override, from a valid session.
    let mut alice = server.client("alice").await;
    alice
        .send(Message::Sub(Sub {
            channel: "news\u{202e}txt.exe".into(),
            since: None,
        }))
        .await;
    let e = refused(&mut alice).await;
    assert_eq!(e.code, ErrorCode::InvalidName, "{}", e.message);

    // The bystander's session and channel are untouched.
    let mut carol = server.client("carol").await;
    carol.publish("news", "still here", Flags::empty()).await;
    assert_eq!(&bystander.deliver().await.payload[..], b"still here");
}

#[tokio::test]
async fn a_token_for_an_invisible_name_is_refused() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    // Minted without the checks `apm-server token` makes.
    let t = token("alice\u{2066}", false, Duration::from_secs(3600));
    let mut c = Client::connect(server.addr).await;
    c.send(Message::Hello(Hello {
        user: String::new(),
        token: t,
        client: "t".into(),
    }))
    .await;
    let e = refused(&mut c).await;
    assert_eq!(e.code, ErrorCode::AuthFailed, "{}", e.message);
}
