//! The HTTP API for backends against a real server: real HTTP requests on
//! its HTTP listener, real SDK clients on its client listener.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use apm_client::{Client, Conversation, Deliver, content_kind};
use apm_tests::http::HttpClient;
use apm_tests::{API_KEY, Flaky, PATIENCE, TestServer};
use futures::StreamExt;
use hyper::StatusCode;
use serde_json::{Value, json};

/// Awaits `f`, failing the test after [`PATIENCE`].
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.expect("in time")
}

async fn client(server: &TestServer, user: &str) -> Client {
    Client::builder(server.addr.to_string())
        .credentials(user, "")
        .connect()
        .await
        .expect("connect")
}

/// The next private message or broadcast `client` receives.
async fn next_private(inbox: &mut apm_client::Inbox) -> Deliver {
    within(inbox.next()).await.expect("inbox open")
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    let params = json!({ "channel": "news", "text": "hi" }).to_string();
    let missing = http
        .request("POST", "/api/publish", &[], params.clone())
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.error_code(), "missing_api_key");
    for header in [
        ("authorization", "apikey not-the-key-0123456789"),
        ("x-api-key", "not-the-key-0123456789"),
        ("authorization", "Bearer test-api-key-0123456789"),
    ] {
        let wrong = http
            .request("POST", "/api/publish", &[header], params.clone())
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert!(
            ["bad_api_key", "missing_api_key"].contains(&wrong.error_code().as_str()),
            "{header:?}: {}",
            wrong.text()
        );
    }
    assert_eq!(
        server.metrics.api_auth_failures.load(SeqCst),
        4,
        "each refusal is counted"
    );
    let by_header = http
        .request("POST", "/api/info", &[("x-api-key", API_KEY)], "")
        .await;
    assert_eq!(by_header.status, StatusCode::OK, "{}", by_header.text());
    assert_eq!(
        by_header.json()["shards"],
        json!(server_shards(&http).await)
    );
}

async fn server_shards(http: &HttpClient) -> u64 {
    http.ok("info", json!({})).await["shards"]
        .as_u64()
        .expect("shards")
}

#[tokio::test]
async fn a_publish_reaches_subscribers_with_the_api_sender_and_its_seq() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    let bob = client(&server, "bob").await;
    let mut news = bob.subscribe("news").await.unwrap();

    let r = http
        .ok(
            "publish",
            json!({ "channel": "news", "text": "order 42 shipped", "sender": "orders" }),
        )
        .await;
    assert_eq!(r["sender"], "$api/orders");
    assert_eq!(r["conversation"], json!({ "channel": "news" }));
    assert!(r["ts_ms"].as_u64().unwrap() > 0);
    let epoch = http.ok("info", json!({})).await["epoch"].clone();
    assert_eq!(r["epoch"], epoch);
    let m = within(news.next()).await.unwrap();
    assert_eq!(
        (m.seq, &*m.sender, &m.payload[..], m.kind),
        (
            r["seq"].as_u64().unwrap(),
            "$api/orders",
            &b"order 42 shipped"[..],
            content_kind::TEXT
        )
    );

    // Binary as base64; with no sender named, the key's name is the sender.
    let r = http
        .ok(
            "publish",
            json!({ "channel": "news", "base64": "AAEC/w==", "kind": 77 }),
        )
        .await;
    let m = within(news.next()).await.unwrap();
    assert_eq!(m.seq, r["seq"].as_u64().unwrap());
    assert_eq!((&*m.sender, m.kind), ("$api/backend", 77));
    assert_eq!(&m.payload[..], &[0, 1, 2, 255]);
}

#[tokio::test]
async fn a_send_reaches_every_device_of_the_user_and_nobody_else() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    let phone = client(&server, "alice").await;
    let laptop = client(&server, "alice").await;
    let other = client(&server, "bob").await;
    let (mut phone_in, mut laptop_in) = (phone.messages().unwrap(), laptop.messages().unwrap());
    let mut other_in = other.messages().unwrap();

    let r = http
        .ok(
            "send",
            json!({ "user": "alice", "text": "your code is 1234" }),
        )
        .await;
    assert_eq!(r["conversation"], json!({ "user": "alice" }));
    for inbox in [&mut phone_in, &mut laptop_in] {
        let m = next_private(inbox).await;
        assert_eq!(m.conversation, Conversation::User("alice".into()));
        assert_eq!(
            (m.seq, &*m.sender),
            (r["seq"].as_u64().unwrap(), "$api/backend")
        );
        assert_eq!(&m.payload[..], b"your code is 1234");
    }
    // Bob gets the next thing sent to him, not Alice's message.
    http.ok("send", json!({ "user": "bob", "text": "yours" }))
        .await;
    assert_eq!(&next_private(&mut other_in).await.payload[..], b"yours");
}

#[tokio::test]
async fn a_broadcast_reaches_everyone() {
    let server = TestServer::start_http(|c| c.shards = 3).await;
    let http = server.http();
    let mut inboxes = Vec::new();
    for user in ["a", "b", "c", "d"] {
        inboxes.push(client(&server, user).await.messages().unwrap());
    }
    let r = http
        .ok("broadcast", json!({ "text": "maintenance at noon" }))
        .await;
    assert_eq!(r["conversation"], json!({ "broadcast": true }));
    for inbox in &mut inboxes {
        let m = next_private(inbox).await;
        assert_eq!(m.conversation, Conversation::Broadcast);
        assert_eq!(&m.payload[..], b"maintenance at noon");
        assert_eq!(m.seq, r["seq"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn a_repeated_msg_id_gets_the_first_seq_and_is_delivered_once() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    let bob = client(&server, "bob").await;
    let mut room = bob.subscribe("room").await.unwrap();
    let publish = |sender: &'static str, msg_id: u64, text: &'static str| {
        let http = http.clone();
        async move {
            let params = json!({
                "channel": "room", "text": text, "msg_id": msg_id, "sender": sender,
            });
            http.ok("publish", params).await["seq"].as_u64().unwrap()
        }
    };
    let first = publish("orders", 7, "once").await;
    assert_eq!(publish("orders", 7, "once").await, first, "a retry");
    assert_eq!(server.metrics.duplicates.load(SeqCst), 1);
    // The same msg_id from another sender is another message.
    let other = publish("billing", 7, "twice").await;
    assert_eq!(other, first + 1);
    let got: Vec<(u64, String)> = vec![
        within(room.next()).await.unwrap(),
        within(room.next()).await.unwrap(),
    ]
    .into_iter()
    .map(|m| (m.seq, m.sender.into()))
    .collect();
    assert_eq!(
        got,
        [
            (first, "$api/orders".into()),
            (other, "$api/billing".into())
        ]
    );
}

#[tokio::test]
async fn presence_history_and_unread() {
    let server = TestServer::start_http(|c| c.shards = 2).await;
    let http = server.http();
    let alice = client(&server, "alice").await;
    let bob = client(&server, "bob").await;
    let _a = alice.subscribe("room").await.unwrap();
    let _b = bob.subscribe("room").await.unwrap();
    let _c = bob.subscribe("lobby").await.unwrap();

    let online = http.ok("is_online", json!({ "user": "alice" })).await;
    assert_eq!(
        online,
        json!({ "user": "alice", "online": true, "connections": 1 })
    );
    let offline = http.ok("is_online", json!({ "user": "carol" })).await;
    assert_eq!(offline["online"], false);

    let page = http.ok("online_users", json!({ "limit": 1 })).await;
    assert_eq!(page, json!({ "users": ["alice"], "next": "alice" }));
    let page = http
        .ok("online_users", json!({ "after": "alice", "limit": 1 }))
        .await;
    assert_eq!(page["users"], json!(["bob"]));

    let members = http
        .ok("channel_members", json!({ "channel": "room" }))
        .await;
    assert_eq!(
        members,
        json!({ "channel": "room", "users": ["alice", "bob"], "next": null })
    );
    let channels = http.ok("channels", json!({})).await;
    assert_eq!(
        channels["channels"],
        json!([{ "channel": "lobby", "members": 1 }, { "channel": "room", "members": 2 }])
    );

    for text in ["one", "two", "three"] {
        http.ok("publish", json!({ "channel": "room", "text": text }))
            .await;
    }
    http.ok("send", json!({ "user": "alice", "base64": "/w==" }))
        .await;
    let history = http
        .ok(
            "history",
            json!({ "channel": "room", "after": 1, "limit": 10 }),
        )
        .await;
    assert_eq!(
        (history["oldest"].clone(), history["last"].clone()),
        (json!(1), json!(3))
    );
    let texts: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["text"])
        .collect();
    assert_eq!(texts, [&json!("two"), &json!("three")]);
    assert_eq!(history["messages"][0]["sender"], "$api/backend");
    let inbox = http.ok("history", json!({ "user": "alice" })).await;
    assert_eq!(inbox["messages"][0]["base64"], "/w==");

    let room = Conversation::Channel("room".into());
    alice.ack(room.clone(), 1).await.unwrap();
    // The answer comes from the room's shard after it took the ack, which
    // Alice's connection sent before.
    alice.history(room, None, None, 1).await.unwrap();
    let unread = http
        .ok(
            "unread",
            json!({ "user": "alice", "conversations": [
                { "channel": "room" }, { "user": "alice" }, { "broadcast": true },
            ] }),
        )
        .await;
    let counts: Vec<(u64, u64, u64)> = unread["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap();
            (n("last"), n("acked"), n("unread"))
        })
        .collect();
    assert_eq!(counts, [(3, 1, 2), (1, 0, 1), (0, 0, 0)]);
}

#[tokio::test]
async fn a_batch_answers_each_call_in_order() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    let bob = client(&server, "bob").await;
    let mut room = bob.subscribe("room").await.unwrap();
    let answer = http
        .ok(
            "batch",
            json!({ "requests": [
                { "method": "publish", "params": { "channel": "room", "text": "a" } },
                { "method": "no_such_method", "params": {} },
                { "method": "publish", "params": { "channel": "room", "text": "b" } },
                { "method": "is_online", "params": { "user": "bob" } },
                { "method": "publish", "params": { "channel": "room" } },
            ] }),
        )
        .await;
    let replies = answer["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[0]["result"]["seq"], 1);
    assert_eq!(replies[1]["error"]["code"], "unknown_method");
    assert_eq!(replies[2]["result"]["seq"], 2);
    assert_eq!(replies[3]["result"]["online"], true);
    assert_eq!(replies[4]["error"]["code"], "bad_request");
    let seqs = [
        within(room.next()).await.unwrap().seq,
        within(room.next()).await.unwrap().seq,
    ];
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = TestServer::start_http(|c| {
        c.http_max_body = 4096;
        c.max_frame_len = 1024;
    })
    .await;
    let http = server.http();
    let refused = |status: StatusCode, code: &'static str| {
        move |a: apm_tests::http::Answer| {
            assert_eq!(
                (a.status, a.error_code().as_str()),
                (status, code),
                "{}",
                a.text()
            );
        }
    };
    let key = format!("apikey {API_KEY}");
    let auth = [("authorization", key.as_str())];
    refused(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")(
        http.request("POST", "/api/publish", &auth, vec![b' '; 5000])
            .await,
    );
    refused(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")(
        http.call(
            "publish",
            json!({ "channel": "c", "text": "x".repeat(2000) }),
        )
        .await,
    );
    refused(StatusCode::BAD_REQUEST, "invalid_json")(
        http.request("POST", "/api/publish", &auth, "{not json")
            .await,
    );
    refused(StatusCode::BAD_REQUEST, "invalid_json")(
        http.call("publish", json!({ "channel": "c", "txt": "typo" }))
            .await,
    );
    refused(StatusCode::NOT_FOUND, "unknown_method")(http.call("kick", json!({})).await);
    refused(StatusCode::NOT_FOUND, "not_found")(http.get("/nowhere").await);
    refused(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")(http.get("/api/publish").await);
    refused(StatusCode::FORBIDDEN, "forbidden")(
        http.call("publish", json!({ "channel": "$presence", "text": "x" }))
            .await,
    );
    for params in [
        json!({ "channel": "c", "text": "x", "base64": "eA==" }),
        json!({ "channel": "c" }),
        json!({ "channel": "c", "base64": "not base64!" }),
        json!({ "channel": "c", "text": "x", "sender": "a/b" }),
        json!({ "channel": "two words", "text": "x" }),
        json!({ "user": "bob", "text": "x" }),
    ] {
        refused(StatusCode::BAD_REQUEST, "bad_request")(http.call("publish", params).await);
    }
    refused(StatusCode::BAD_REQUEST, "bad_request")(
        http.call("history", json!({ "channel": "c", "user": "u" }))
            .await,
    );
    // Still serving.
    assert_eq!(
        http.ok("publish", json!({ "channel": "c", "text": "fine" }))
            .await["seq"],
        1
    );
}

#[tokio::test]
async fn health_and_readiness_follow_the_store() {
    let store = Arc::new(Flaky::default());
    let server = TestServer::start_with_store(store.clone(), |c| {
        c.http_listen = apm_server::config::HttpListen(Some("127.0.0.1:0".parse().unwrap()));
        c.api_keys = vec![format!("backend={API_KEY}")];
    })
    .await;
    let http = server.http();
    let health = http.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    assert_eq!(http.get("/readyz").await.status, StatusCode::OK);

    store.failing.store(true, SeqCst);
    // This one is taken, then waits for the disk while the writes fail.
    let waiting = tokio::spawn({
        let http = http.clone();
        async move {
            http.call("publish", json!({ "channel": "c", "text": "one" }))
                .await
        }
    });
    // The second failed attempt comes after the server marked the store
    // failing.
    store.failed.notified().await;
    store.failed.notified().await;
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json()["reasons"],
        json!(["the message store is failing"])
    );
    let refused = http
        .call("publish", json!({ "channel": "c", "text": "two" }))
        .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "store_failing")
    );
    assert_eq!(refused.retry_after.as_deref(), Some("1"));

    store.failing.store(false, SeqCst);
    let taken = within(waiting).await.unwrap();
    assert_eq!(taken.status, StatusCode::OK, "{}", taken.text());
    assert_eq!(taken.json()["seq"], 1);
    assert_eq!(http.get("/readyz").await.status, StatusCode::OK);
}
