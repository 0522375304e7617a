//! Malformed input, limits and slow consumers: the offender is told and
//! closed; everyone else carries on.

use std::sync::atomic::Ordering;

use apm_core::{ErrorCode, Flags, Message};
use apm_tests::{Client, TestServer};
use bytes::{BufMut, BytesMut};

async fn expect_error(c: &mut Client, code: ErrorCode) {
    loop {
        let f = c.recv().await;
        match f.message {
            Message::Error(e) => {
                assert_eq!(e.code, code, "{}", e.message);
                break;
            }
            Message::PresenceEvent(_) | Message::SubOk(_) => {}
            other => panic!("expected Error({code}), got {other:?}"),
        }
    }
    c.expect_eof().await;
}

#[tokio::test]
async fn oversize_frame() {
    let server = TestServer::start(|c| c.max_frame_len = 4096).await;
    let mut bystander = server.client("ok").await;
    bystander.sub("c").await;
    let mut bad = server.client("bad").await;
    let mut b = BytesMut::new();
    b.put_u32(1 << 30);
    bad.send_raw(&b).await;
    expect_error(&mut bad, ErrorCode::FrameTooLarge).await;
    assert!(bystander.round_trip().await.is_empty());
}

#[tokio::test]
async fn garbage_bytes() {
    let server = TestServer::start(|_| {}).await;
    let mut bystander = server.client("ok").await;
    let mut bad = server.client("bad").await;
    bad.send_raw(&[0, 0, 0, 12, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])
        .await;
    expect_error(&mut bad, ErrorCode::UnsupportedVersion).await;

    let mut bad = server.client("bad2").await;
    bad.send_raw(&[0, 0, 0, 10, 1, 0x10, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
        .await;
    expect_error(&mut bad, ErrorCode::Malformed).await;

    let mut bad = server.client("bad3").await;
    bad.send_raw(&[0, 0, 0, 8, 1, 0x99, 0, 0, 0, 0, 0, 0]).await;
    expect_error(&mut bad, ErrorCode::UnknownType).await;

    let mut bad = server.client("bad4").await;
    // A Sub to a channel with a space in its name.
    bad.send_raw(&[
        0, 0, 0, 13, 1, 0x10, 0, 0, 0, 0, 0, 1, 3, b'a', b' ', b'b', 0,
    ])
    .await;
    expect_error(&mut bad, ErrorCode::InvalidName).await;

    assert!(bystander.round_trip().await.is_empty());
    assert_eq!(server.metrics.protocol_errors.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn too_many_subscriptions() {
    let server = TestServer::start(|c| c.max_subscriptions = 3).await;
    let mut c = server.client("a").await;
    for ch in ["a", "b", "c"] {
        c.sub(ch).await;
    }
    // Holding one again is not a new subscription.
    c.sub("a").await;
    c.send(Message::Sub(apm_core::message::Sub {
        channel: "d".into(),
        since: None,
    }))
    .await;
    expect_error(&mut c, ErrorCode::TooManySubscriptions).await;
}

#[tokio::test]
async fn connection_limits() {
    let server = TestServer::start(|c| {
        c.max_connections = 2;
        c.max_connections_per_user = 1;
    })
    .await;
    let _a = server.client("a").await;
    let mut a2 = Client::connect(server.addr).await;
    a2.send(Message::Hello(apm_core::message::Hello {
        user: "a".into(),
        token: String::new(),
        client: "t".into(),
    }))
    .await;
    expect_error(&mut a2, ErrorCode::TooManyUserConnections).await;
    let _b = server.client("b").await;
    let mut c = Client::connect(server.addr).await;
    expect_error(&mut c, ErrorCode::TooManyConnections).await;
    assert_eq!(
        server.metrics.connections_refused.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = TestServer::start(|c| c.idle_timeout_ms = 200).await;
    let mut c = server.client("sleepy").await;
    let f = c.recv().await;
    assert!(matches!(f.message, Message::Close(ref b) if b.code == ErrorCode::IdleTimeout));
    c.expect_eof().await;
}

/// One subscriber stops reading. It is disconnected as a slow consumer while
/// 100 others receive every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_the_rest_carry_on() {
    const MESSAGES: u64 = 3000;
    let server = TestServer::start(|c| {
        c.outbound_queue = 1024;
        c.socket_send_buffer = 16 * 1024;
    })
    .await;
    let mut slow = Client::connect_small_buffer(server.addr, 4096).await;
    slow.hello("slow", "").await;
    slow.sub("feed").await;

    // Each reader lets the publisher run at most LEAD messages ahead of
    // it, well inside the outbound queue: on a loaded machine a reader
    // the scheduler left behind must not be the slow consumer.
    const LEAD: usize = 256;
    let mut readers = Vec::new();
    let mut leads = Vec::new();
    for i in 0..100 {
        let mut c = server.client(&format!("r{i}")).await;
        c.sub("feed").await;
        let lead = std::sync::Arc::new(tokio::sync::Semaphore::new(LEAD));
        leads.push(lead.clone());
        readers.push(tokio::spawn(async move {
            for seq in 1..=MESSAGES {
                let d = c.deliver().await;
                assert_eq!(d.seq, seq, "reader {i}");
                lead.add_permits(1);
            }
        }));
    }

    let mut publisher = server.client("pub").await;
    let payload = "x".repeat(512);
    // Flow control: at most 32 publishes without a receipt.
    let mut in_flight = 0;
    for _ in 0..MESSAGES {
        for lead in &leads {
            lead.acquire().await.expect("open").forget();
        }
        publisher.publish("feed", &payload, Flags::RECEIPT).await;
        in_flight += 1;
        while in_flight >= 32 {
            let f = publisher.recv().await;
            if matches!(f.message, Message::Receipt(_)) {
                in_flight -= 1;
            }
        }
    }
    for r in readers {
        r.await.expect("reader saw every message in order");
    }
    assert_eq!(server.metrics.slow_consumers.load(Ordering::Relaxed), 1);
    // The slow one finds, after whatever it had buffered, a close.
    let mut closed = false;
    while let Some(f) = slow.next().await {
        if let Message::Close(b) = f.message {
            assert_eq!(b.code, ErrorCode::SlowConsumer);
            closed = true;
        }
    }
    let _ = closed; // The Close frame is best effort when the socket is full.
}

/// A client that pipelined far past a fatal error still reads the `Error`:
/// the server shuts its side and discards the rest instead of resetting
/// the connection over unread input.
#[tokio::test]
async fn the_error_arrives_although_the_client_pipelined_past_it() {
    let server = TestServer::start(|_| {}).await;
    for round in 0..3 {
        let mut bad = server.client(&format!("bad{round}")).await;
        let mut b = BytesMut::new();
        // An unknown message type: fatal.
        b.put_slice(&[0, 0, 0, 8, 1, 0x99, 0, 0, 0, 0, 0, 0]);
        // Then 4 MiB of well-formed pings the server will never answer:
        // more than the socket buffers hold, so the write completes only
        // if the server takes them in.
        for _ in 0..(4 * 1024 * 1024 / 12) {
            b.put_slice(&[0, 0, 0, 8, 1, 0x04, 0, 0, 0, 0, 0, 1]);
        }
        bad.send_raw(&b).await;
        expect_error(&mut bad, ErrorCode::UnknownType).await;
    }
}

/// An `Error` about a frame whose header arrived carries that frame's
/// request id, even when the frame does not decode; one found from the
/// length alone carries 0.
#[tokio::test]
async fn errors_carry_the_request_id_of_the_faulty_frame() {
    let server = TestServer::start(|c| c.max_frame_len = 4096).await;
    let frame = |kind: u8, id: u32, body: &[u8]| {
        let mut b = BytesMut::new();
        b.put_u32(8 + body.len() as u32);
        b.put_u8(1);
        b.put_u8(kind);
        b.put_u16(0);
        b.put_u32(id);
        b.put_slice(body);
        b
    };
    let cases: [(BytesMut, ErrorCode, u32); 4] = [
        // Sub whose channel runs past the body.
        (frame(0x10, 77, &[0x7f, b'a']), ErrorCode::Malformed, 77),
        (frame(0x7e, 5, &[]), ErrorCode::UnknownType, 5),
        // Sub to a channel with a space in its name, no `since`.
        (
            frame(0x10, 9, &[3, b'a', b' ', b'b', 0]),
            ErrorCode::InvalidName,
            9,
        ),
        (
            {
                let mut b = BytesMut::new();
                b.put_u32(1 << 30);
                b
            },
            ErrorCode::FrameTooLarge,
            0,
        ),
    ];
    for (bytes, code, id) in cases {
        let mut bad = server.client("bad").await;
        bad.send_raw(&bytes).await;
        let f = loop {
            let f = bad.recv().await;
            if matches!(f.message, Message::Error(_)) {
                break f;
            }
        };
        let Message::Error(e) = f.message else {
            unreachable!()
        };
        assert_eq!((e.code, f.request_id), (code, id), "{}", e.message);
        bad.expect_eof().await;
    }
}
