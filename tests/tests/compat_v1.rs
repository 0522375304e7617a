//! A client of protocol version 1 as it was first written, against the
//! server of today: the compatibility rule of PROTOCOL.md §3 ("How the
//! protocol grows"), kept honest.
//!
//! The client here does not use `apm-core`: its frames are spelled out byte
//! by byte from the version 1 text, and it decodes what it receives with a
//! reader frozen at that text, consuming every body exactly. A change that
//! sends such a client a field, a flag or a message type it did not know
//! fails here, not in a deployed app.

use apm_tests::{PATIENCE, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// Version 1's message types.
const HELLO: u8 = 0x01;
const WELCOME: u8 = 0x02;
const ERROR: u8 = 0x03;
const PING: u8 = 0x04;
const PONG: u8 = 0x05;
const CLOSE: u8 = 0x06;
const SUB: u8 = 0x10;
const SUB_OK: u8 = 0x12;
const PUBLISH: u8 = 0x20;
const DIRECT: u8 = 0x21;
const DELIVER: u8 = 0x23;
const RECEIPT: u8 = 0x24;
const ACK: u8 = 0x25;
const HISTORY_REQUEST: u8 = 0x30;
const HISTORY_RESPONSE: u8 = 0x31;
const UNREAD_REQUEST: u8 = 0x32;
const UNREAD_RESPONSE: u8 = 0x33;
const PRESENCE_QUERY: u8 = 0x40;
const PRESENCE_RESPONSE: u8 = 0x41;
const PRESENCE_EVENT: u8 = 0x42;

/// Every type a version 1 client may receive.
const V1_SERVER_TYPES: [u8; 13] = [
    WELCOME,
    ERROR,
    PING,
    PONG,
    CLOSE,
    SUB_OK,
    0x13, // UnsubOk
    DELIVER,
    RECEIPT,
    HISTORY_RESPONSE,
    UNREAD_RESPONSE,
    PRESENCE_RESPONSE,
    PRESENCE_EVENT,
];

/// A frame as version 1 lays it out.
fn frame(kind: u8, flags: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A string as a body holds it: its length (one byte here: every string
/// in this file is shorter than 128 bytes), then its bytes.
fn s(text: &str) -> Vec<u8> {
    assert!(text.len() < 128);
    let mut out = vec![text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One received frame.
struct Received {
    kind: u8,
    flags: u16,
    request_id: u32,
    body: Vec<u8>,
}

/// Reads a body the way version 1 says; `done` insists nothing is left.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Self {
        Reader { body, at: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = *self.body.get(self.at).expect("body ended early");
        self.at += 1;
        b
    }

    fn varint(&mut self, max_bytes: usize) -> u64 {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte();
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return value;
            }
        }
        panic!("varint longer than {max_bytes} bytes");
    }

    fn u16(&mut self) -> u16 {
        self.varint(3) as u16
    }
    fn u32(&mut self) -> u32 {
        self.varint(5) as u32
    }
    fn u64(&mut self) -> u64 {
        self.varint(10)
    }

    fn string(&mut self) -> String {
        let len = self.varint(5) as usize;
        let bytes = self.body[self.at..self.at + len].to_vec();
        self.at += len;
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// `Conversation`: 0 Channel(String), 1 User(String), 2 Broadcast.
    fn conversation(&mut self) -> String {
        match self.varint(5) {
            0 => format!("channel:{}", self.string()),
            1 => format!("user:{}", self.string()),
            2 => "broadcast".to_owned(),
            v => panic!("conversation variant {v}"),
        }
    }

    /// What is left, for payloads.
    fn rest(&mut self) -> Vec<u8> {
        let rest = self.body[self.at..].to_vec();
        self.at = self.body.len();
        rest
    }

    fn done(&self) {
        assert_eq!(
            self.at,
            self.body.len(),
            "{} bytes a version 1 client does not know",
            self.body.len() - self.at
        );
    }
}

/// Decodes a frame as version 1 does: known type, no capability flags,
/// the body consumed exactly. Answers a short description for the test's
/// checks.
fn decode_v1(f: &Received) -> String {
    assert!(
        V1_SERVER_TYPES.contains(&f.kind),
        "type {:#04x} is not one a version 1 client knows",
        f.kind
    );
    assert_eq!(
        f.flags & 0xff00,
        0,
        "capability flags sent to a client that asked for none"
    );
    let mut r = Reader::new(&f.body);
    let text = match f.kind {
        WELCOME => {
            let session_id = r.u64();
            let user = r.string();
            let role = r.varint(5);
            let _time = r.u64();
            let heartbeat = r.u32();
            let idle = r.u32();
            let max_frame = r.u32();
            let _epoch = r.u64();
            assert!(session_id > 0 && heartbeat > 0 && idle > 0 && max_frame > 0);
            format!("welcome {user} role {role}")
        }
        ERROR => {
            let code = r.u16();
            let _message = r.string();
            format!("error {code}")
        }
        CLOSE => {
            let code = r.u16();
            let _reason = r.string();
            format!("close {code}")
        }
        PING => "ping".to_owned(),
        PONG => "pong".to_owned(),
        SUB_OK => {
            let channel = r.string();
            let seq = r.u64();
            let oldest = r.u64();
            format!("subok {channel} {seq} {oldest}")
        }
        0x13 => format!("unsubok {}", r.string()),
        DELIVER => {
            let conversation = r.conversation();
            let seq = r.u64();
            let _ts = r.u64();
            let sender = r.string();
            let kind = r.u16();
            let msg_id = r.u64();
            let payload = String::from_utf8(r.rest()).expect("text payload");
            format!("deliver {conversation} {seq} {sender} {kind} {msg_id} {payload}")
        }
        RECEIPT => {
            let conversation = r.conversation();
            let seq = r.u64();
            let _ts = r.u64();
            format!("receipt {conversation} {seq}")
        }
        HISTORY_RESPONSE => {
            let conversation = r.conversation();
            let oldest = r.u64();
            let last = r.u64();
            let n = r.varint(5);
            let mut items = Vec::new();
            for _ in 0..n {
                let seq = r.u64();
                let _ts = r.u64();
                let sender = r.string();
                let _kind = r.u16();
                let _msg_id = r.u64();
                let len = r.varint(5) as usize;
                let payload = String::from_utf8(r.body[r.at..r.at + len].to_vec()).unwrap();
                r.at += len;
                items.push(format!("{seq}:{sender}:{payload}"));
            }
            format!(
                "history {conversation} {oldest} {last} [{}]",
                items.join(",")
            )
        }
        UNREAD_RESPONSE => {
            let n = r.varint(5);
            let mut counts = Vec::new();
            for _ in 0..n {
                let conversation = r.conversation();
                let last = r.u64();
                let acked = r.u64();
                counts.push(format!("{conversation}={last}/{acked}"));
            }
            format!("unread [{}]", counts.join(","))
        }
        PRESENCE_RESPONSE => match r.varint(5) {
            0 => {
                let user = r.string();
                let connections = r.u32();
                format!("online {user} {connections}")
            }
            1..=4 => {
                r.rest();
                "presence".to_owned()
            }
            v => panic!("presence response variant {v}"),
        },
        PRESENCE_EVENT => match r.varint(5) {
            0 => format!("event online {}", r.string()),
            1 => format!("event offline {}", r.string()),
            2 => {
                let channel = r.string();
                format!("event join {channel} {}", r.string())
            }
            3 => {
                let channel = r.string();
                format!("event leave {channel} {}", r.string())
            }
            v => panic!("presence event variant {v}"),
        },
        _ => unreachable!(),
    };
    r.done();
    text
}

/// A version 1 client: a socket, and every frame it got, decoded.
struct V1Client {
    stream: TcpStream,
}

impl V1Client {
    async fn connect(server: &TestServer, user: &str) -> V1Client {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut c = V1Client { stream };
        // Hello: user, token (empty: dev mode), client; flags 0.
        c.send(&frame(
            HELLO,
            0,
            1,
            &cat(&[&s(user), &s(""), &s("v1-fixture/1.0")]),
        ))
        .await;
        let welcome = c.next_kind(WELCOME).await;
        assert_eq!(welcome.request_id, 1);
        assert_eq!(welcome.flags, 0, "a Welcome with capabilities");
        assert_eq!(decode_v1(&welcome), format!("welcome {user} role 0"));
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn read(&mut self) -> Option<Received> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("nothing from the server in {PATIENCE:?}"),
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut rest = vec![0u8; len];
        self.stream.read_exact(&mut rest).await.expect("frame");
        assert_eq!(rest[0], 1, "version");
        Some(Received {
            kind: rest[1],
            flags: u16::from_be_bytes([rest[2], rest[3]]),
            request_id: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            body: rest[8..].to_vec(),
        })
    }

    /// The next frame of `kind`; every frame before it must decode as
    /// version 1 too (presence events, say).
    async fn next_kind(&mut self, kind: u8) -> Received {
        loop {
            let f = self.read().await.expect("connection open");
            if f.kind == kind {
                return f;
            }
            decode_v1(&f);
        }
    }

    /// The next frame of `kind`, decoded.
    async fn expect(&mut self, kind: u8, request_id: u32) -> String {
        let f = self.next_kind(kind).await;
        assert_eq!(f.request_id, request_id);
        decode_v1(&f)
    }
}

#[tokio::test]
async fn a_version_1_client_works_against_this_server() {
    let server = TestServer::start(|_| {}).await;
    let mut alice = V1Client::connect(&server, "v1alice").await;
    let mut bob = V1Client::connect(&server, "v1bob").await;

    // Sub "v1room", no since.
    alice
        .send(&frame(SUB, 0, 2, &cat(&[&s("v1room"), &[0]])))
        .await;
    assert_eq!(alice.expect(SUB_OK, 2).await, "subok v1room 0 1");
    bob.send(&frame(SUB, 0, 2, &cat(&[&s("v1room"), &[0]])))
        .await;
    assert_eq!(bob.expect(SUB_OK, 2).await, "subok v1room 0 1");

    // Publish with RECEIPT: channel, kind 1 (text), msg_id 7, payload.
    bob.send(&frame(
        PUBLISH,
        0x0001,
        3,
        &cat(&[&s("v1room"), &[1], &[7], b"hi"]),
    ))
    .await;
    assert_eq!(bob.expect(RECEIPT, 3).await, "receipt channel:v1room 1");
    assert_eq!(
        alice.expect(DELIVER, 0).await,
        "deliver channel:v1room 1 v1bob 1 7 hi"
    );

    // Direct to bob, with RECEIPT.
    alice
        .send(&frame(
            DIRECT,
            0x0001,
            4,
            &cat(&[&s("v1bob"), &[1], &[8], b"psst"]),
        ))
        .await;
    assert_eq!(alice.expect(RECEIPT, 4).await, "receipt user:v1bob 1");
    assert_eq!(
        bob.expect(DELIVER, 0).await,
        "deliver user:v1bob 1 v1alice 1 8 psst"
    );

    // History: Channel("v1room"), before None, after None, limit 10.
    alice
        .send(&frame(
            HISTORY_REQUEST,
            0,
            5,
            &cat(&[&[0], &s("v1room"), &[0], &[0], &[10]]),
        ))
        .await;
    assert_eq!(
        alice.expect(HISTORY_RESPONSE, 5).await,
        "history channel:v1room 1 1 [1:v1bob:hi]"
    );

    // Ack the channel, then unread counts for it.
    alice
        .send(&frame(ACK, 0, 6, &cat(&[&[0], &s("v1room"), &[1]])))
        .await;
    alice
        .send(&frame(
            UNREAD_REQUEST,
            0,
            7,
            &cat(&[&[1], &[0], &s("v1room")]),
        ))
        .await;
    assert_eq!(
        alice.expect(UNREAD_RESPONSE, 7).await,
        "unread [channel:v1room=1/1]"
    );

    // Presence: IsOnline { user }.
    alice
        .send(&frame(PRESENCE_QUERY, 0, 8, &cat(&[&[0], &s("v1bob")])))
        .await;
    assert_eq!(alice.expect(PRESENCE_RESPONSE, 8).await, "online v1bob 1");

    // Ping, and a refused request (publishing to a server channel): a
    // non-fatal Error with the request's id, after which the connection
    // goes on.
    alice.send(&frame(PING, 0, 9, &[])).await;
    assert_eq!(alice.expect(PONG, 9).await, "pong");
    alice
        .send(&frame(
            PUBLISH,
            0x0001,
            10,
            &cat(&[&s("$presence"), &[1], &[0], b"x"]),
        ))
        .await;
    assert_eq!(alice.expect(ERROR, 10).await, "error 14");
    alice.send(&frame(PING, 0, 11, &[])).await;
    assert_eq!(alice.expect(PONG, 11).await, "pong");

    // Close: the server flushes and closes; whatever came first is v1.
    alice
        .send(&frame(CLOSE, 0, 0, &cat(&[&[34], &s("bye")])))
        .await;
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Some(f) = alice.read().await {
            decode_v1(&f);
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close after Close");
}
