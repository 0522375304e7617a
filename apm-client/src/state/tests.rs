//! Unit tests of the session state: frames in, frames and events out, with
//! the callers' channels read directly.

use apm_core::codec::decode_frame;
use apm_core::message::{
    CloseBody, Conversation, ErrorBody, PresenceEvent, Publish, Receipt, Role, UnsubOk,
};
use apm_core::{ErrorCode, Limits};
use bytes::BytesMut;
use tokio::sync::oneshot::error::TryRecvError;

use super::*;

mod route;
mod server_subs;

type Answer = oneshot::Receiver<Result<Frame, Error>>;

fn welcome(epoch: u64) -> Welcome {
    Welcome {
        session_id: 1,
        user: "alice".into(),
        role: Role::default(),
        server_time_ms: 0,
        heartbeat_ms: 1000,
        idle_timeout_ms: 3000,
        max_frame_len: Limits::DEFAULT_MAX_FRAME_LEN,
        epoch,
    }
}

fn state_with_inbox(capacity: usize) -> (State, mpsc::Receiver<Deliver>) {
    let (tx, rx) = mpsc::channel(capacity);
    let state = State::new(
        &welcome(1),
        tx,
        mpsc::channel(8).0,
        Limits::DEFAULT_MAX_FRAME_LEN,
    );
    (state, rx)
}

fn state() -> State {
    state_with_inbox(16).0
}

fn decode(bytes: Bytes) -> Frame {
    let mut buf = BytesMut::from(&bytes[..]);
    decode_frame(&mut buf, &Limits::default())
        .expect("decodes")
        .expect("a whole frame")
}

/// Sends a request that waits for its answer.
fn ask(state: &mut State, message: Message, flags: Flags) -> (Frame, Answer) {
    let (tx, rx) = oneshot::channel();
    let bytes = state.request(message, flags, Some(tx)).expect("written");
    (decode(bytes), rx)
}

fn publish(msg_id: u64) -> Message {
    Message::Publish(Publish {
        channel: "news".into(),
        kind: 0,
        msg_id,
        payload: Bytes::from_static(b"hi"),
    })
}

fn receipt(id: u32, seq: u64) -> Frame {
    let r = Receipt {
        conversation: Conversation::Channel("news".into()),
        seq,
        ts_ms: 0,
    };
    Frame::new(id, Message::Receipt(r))
}

fn refusal(id: u32, code: ErrorCode) -> Frame {
    let body = ErrorBody {
        code,
        message: "no".into(),
    };
    Frame::new(id, Message::Error(body))
}

fn sub_ok(id: u32, channel: &str, seq: u64, oldest: u64) -> Frame {
    let ok = SubOk {
        channel: channel.into(),
        seq,
        oldest,
    };
    Frame::new(id, Message::SubOk(ok))
}

fn deliver(conversation: Conversation, seq: u64) -> Frame {
    let d = Deliver {
        conversation: conversation.into(),
        seq,
        ts_ms: 0,
        sender: "bob".into(),
        kind: 0,
        msg_id: 0,
        payload: Bytes::new(),
    };
    Frame::new(0, Message::Deliver(d))
}

fn to(channel: &str, seq: u64) -> Frame {
    deliver(Conversation::Channel(channel.into()), seq)
}

/// Subscribes to `channel` and confirms it at `seq`.
fn subscribed(
    state: &mut State,
    channel: &str,
    seq: u64,
    capacity: usize,
) -> mpsc::Receiver<Deliver> {
    let (tx, rx) = mpsc::channel(capacity);
    let (reply, mut done) = oneshot::channel();
    let frame = decode(state.subscribe(channel.into(), tx, reply).expect("written"));
    assert_eq!(
        state.incoming(sub_ok(frame.request_id, channel, seq, 1)),
        Reaction::Nothing
    );
    assert_eq!(done.try_recv().expect("answered").expect("live").seq, seq);
    rx
}

fn seqs(rx: &mut mpsc::Receiver<Deliver>) -> Vec<u64> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|d| d.seq)
        .collect()
}

fn events(state: &mut State) -> Vec<Event> {
    state.take_events().collect()
}

#[test]
fn a_reply_resolves_its_own_request_and_no_other() {
    let mut state = state();
    let (a, mut a_rx) = ask(&mut state, Message::Ping, Flags::empty());
    let (b, mut b_rx) = ask(&mut state, Message::Ping, Flags::empty());
    assert_ne!(a.request_id, b.request_id);

    let pong = Frame::new(b.request_id, Message::Pong);
    assert_eq!(state.incoming(pong.clone()), Reaction::Nothing);
    assert_eq!(b_rx.try_recv().expect("answered").expect("ok"), pong);
    assert!(matches!(a_rx.try_recv(), Err(TryRecvError::Empty)));

    // A reply nobody waits for (or a second one) goes nowhere.
    assert_eq!(state.incoming(pong), Reaction::Nothing);
    assert!(matches!(a_rx.try_recv(), Err(TryRecvError::Empty)));

    state.incoming(Frame::new(a.request_id, Message::Pong));
    assert!(a_rx.try_recv().expect("answered").is_ok());
}

#[test]
fn an_error_frame_fails_its_request() {
    let mut state = state();
    let (frame, mut rx) = ask(&mut state, publish(0), Flags::RECEIPT);
    state.incoming(refusal(frame.request_id, ErrorCode::Forbidden));
    let err = rx.try_recv().expect("answered").expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Server {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_disconnect_fails_plain_requests_and_resends_receipted_ones_in_order() {
    let mut state = state();
    let (_, mut ping) = ask(&mut state, Message::Ping, Flags::empty());
    // Receipted without a client message id: a copy could not be told apart.
    let (_, mut anonymous) = ask(&mut state, publish(0), Flags::RECEIPT);
    // A client message id but no receipt asked for.
    let (_, mut unreceipted) = ask(&mut state, publish(7), Flags::empty());
    // Enough that a hash map's order would show.
    let mut kept: Vec<(u64, Answer)> = (1..=20)
        .map(|msg_id| (msg_id, ask(&mut state, publish(msg_id), Flags::RECEIPT).1))
        .collect();

    state.disconnected("gone".into());
    for rx in [&mut ping, &mut anonymous, &mut unreceipted] {
        let err = rx.try_recv().expect("answered").expect_err("failed");
        assert!(matches!(err, Error::Disconnected), "{err:?}");
    }
    for (_, rx) in &mut kept {
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }
    assert_eq!(
        events(&mut state),
        [Event::Disconnected {
            reason: "gone".into()
        }]
    );

    state.reconnected(&welcome(1));
    let frames = state.resubscribe();
    let resent: Vec<Message> = frames.iter().map(|f| f.message.clone()).collect();
    assert_eq!(resent, (1..=20).map(publish).collect::<Vec<_>>());
    assert!(frames.iter().all(|f| f.flags.contains(Flags::RECEIPT)));
    // Nothing to re-join: reconnected at once.
    assert_eq!(events(&mut state), [Event::Reconnected]);

    // The answer on the new connection reaches the first caller.
    state.incoming(receipt(frames[4].request_id, 42));
    let answer = kept[4].1.try_recv().expect("answered").expect("ok");
    assert_eq!(answer, receipt(frames[4].request_id, 42));
    assert!(matches!(kept[5].1.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn a_caller_that_gave_up_is_not_sent_again() {
    let mut state = state();
    let (_, first) = ask(&mut state, publish(1), Flags::RECEIPT);
    let (_, _second) = ask(&mut state, publish(2), Flags::RECEIPT);
    drop(first);
    state.disconnected("gone".into());
    let resent: Vec<Message> = state.resubscribe().into_iter().map(|f| f.message).collect();
    assert_eq!(resent, [publish(2)]);

    // Still queued when the caller gave up: not written at all.
    let (tx, rx) = oneshot::channel();
    drop(rx);
    assert_eq!(state.request(publish(3), Flags::RECEIPT, Some(tx)), None);
}

#[test]
fn resubscribe_resumes_each_channel_after_its_last_seq() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 5, 8);
    let _b = subscribed(&mut state, "b", 3, 8);
    state.incoming(to("a", 6));
    state.incoming(to("a", 7));
    assert_eq!(seqs(&mut a), [6, 7]);

    state.disconnected("gone".into());
    state.reconnected(&welcome(1));
    let mut frames = state.resubscribe();
    frames.sort_by_key(|f| format!("{:?}", f.message));
    let subs: Vec<Message> = frames.iter().map(|f| f.message.clone()).collect();
    let sub = |channel: &str, since| {
        Message::Sub(Sub {
            channel: channel.into(),
            since: Some(since),
        })
    };
    assert_eq!(subs, [sub("a", 7), sub("b", 3)]);

    // `Reconnected` waits for every channel to be confirmed.
    assert_eq!(
        events(&mut state),
        [Event::Disconnected {
            reason: "gone".into()
        }]
    );
    state.incoming(sub_ok(frames[0].request_id, "a", 9, 1));
    assert_eq!(events(&mut state), []);
    state.incoming(sub_ok(frames[1].request_id, "b", 3, 1));
    assert_eq!(events(&mut state), [Event::Reconnected]);
}

/// The client's own publishes are not handed back by a resume: a receipt
/// moves the channel's resume point past the message it sequenced.
#[test]
fn a_resume_skips_the_clients_own_publishes() {
    let mut state = state();
    let mut news = subscribed(&mut state, "news", 3, 8);
    state.incoming(to("news", 4));
    let (frame, _answer) = ask(&mut state, publish(0), Flags::RECEIPT);
    state.incoming(receipt(frame.request_id, 5));
    // A late receipt (a retry's, say) never moves the point back.
    let (frame, _answer) = ask(&mut state, publish(0), Flags::RECEIPT);
    state.incoming(receipt(frame.request_id, 2));
    assert_eq!(seqs(&mut news), [4]);

    state.disconnected("gone".into());
    state.reconnected(&welcome(1));
    let frames = state.resubscribe();
    let since: Vec<Option<u64>> = frames
        .iter()
        .map(|f| match &f.message {
            Message::Sub(s) => s.since,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(since, [Some(5)]);
}

#[test]
fn a_new_epoch_resumes_every_channel_from_the_start() {
    let mut state = state();
    let _a = subscribed(&mut state, "a", 5, 8);
    state.disconnected("restarted".into());
    state.reconnected(&welcome(2));
    let frames = state.resubscribe();
    assert_eq!(
        frames[0].message,
        Message::Sub(Sub {
            channel: "a".into(),
            since: Some(0)
        })
    );
}

#[test]
fn a_gap_on_resume_is_reported_and_skipped() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 5, 8);
    state.disconnected("gone".into());
    let frames = state.resubscribe();
    // The server keeps seqs from 10 on: 6..=9 are gone.
    state.incoming(sub_ok(frames[0].request_id, "a", 12, 10));
    let lagged = Event::Lagged {
        stream: "a".into(),
        dropped: 4,
    };
    assert_eq!(events(&mut state)[1..], [lagged, Event::Reconnected]);
    state.incoming(to("a", 9));
    state.incoming(to("a", 10));
    assert_eq!(seqs(&mut a), [10]);
}

#[test]
fn a_refused_resubscribe_ends_the_stream() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 5, 8);
    state.disconnected("gone".into());
    let frames = state.resubscribe();
    state.incoming(refusal(frames[0].request_id, ErrorCode::Forbidden));
    let lost = Event::SubscriptionLost {
        channel: "a".into(),
        reason: "forbidden: no".into(),
    };
    assert_eq!(events(&mut state)[1..], [lost, Event::Reconnected]);
    assert!(matches!(
        a.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

#[test]
fn unsubscribe_ends_the_stream_at_once() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 0, 8);
    let (tx, mut rx) = oneshot::channel();
    let frame = decode(state.unsubscribe("a".into(), Some(tx)).expect("written"));
    assert!(matches!(
        a.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
    let unsub_ok = Frame::new(
        frame.request_id,
        Message::UnsubOk(UnsubOk {
            channel: "a".into(),
        }),
    );
    state.incoming(unsub_ok.clone());
    assert_eq!(rx.try_recv().expect("answered").expect("ok"), unsub_ok);
}

#[test]
fn a_refused_subscribe_fails_and_subscribes_nothing() {
    let mut state = state();
    let (tx, mut rx) = mpsc::channel(8);
    let (reply, mut done) = oneshot::channel();
    let frame = decode(state.subscribe("a".into(), tx, reply).expect("written"));
    state.incoming(refusal(frame.request_id, ErrorCode::Forbidden));
    let err = done.try_recv().expect("answered").expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Server {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{err:?}"
    );
    state.incoming(to("a", 1));
    assert!(rx.try_recv().is_err());
}

#[test]
fn an_oversize_request_fails_alone() {
    let (tx, _inbox) = mpsc::channel(1);
    let mut state = State::new(&welcome(1), tx, mpsc::channel(8).0, 64);
    let big = Message::Publish(Publish {
        channel: "news".into(),
        kind: 0,
        msg_id: 1,
        payload: Bytes::from(vec![0; 1000]),
    });
    let (reply, mut rx) = oneshot::channel();
    assert_eq!(state.request(big, Flags::RECEIPT, Some(reply)), None);
    let err = rx.try_recv().expect("answered").expect_err("too big");
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    // Nothing of it is left to re-send.
    state.disconnected("gone".into());
    assert!(state.resubscribe().is_empty());
    assert!(state.request(Message::Ping, Flags::empty(), None).is_some());
}

#[test]
fn server_frames_outside_a_request() {
    let mut state = state();
    assert_eq!(
        state.incoming(Frame::new(9, Message::Ping)),
        Reaction::Send(Frame::new(9, Message::Pong))
    );
    let online = PresenceEvent::Online { user: "bob".into() };
    state.incoming(Frame::new(0, Message::PresenceEvent(online.clone())));
    assert_eq!(events(&mut state), [Event::Presence(online)]);

    let close = CloseBody {
        code: ErrorCode::Normal,
        reason: "bye".into(),
    };
    assert_eq!(
        state.incoming(Frame::new(0, Message::Close(close))),
        Reaction::Lost("server closed: normal".into())
    );
    assert!(matches!(
        state.incoming(refusal(0, ErrorCode::Malformed)),
        Reaction::Lost(_)
    ));
    // A non-fatal error that answers no request is a notice.
    assert_eq!(
        state.incoming(refusal(0, ErrorCode::Internal)),
        Reaction::Nothing
    );
    let lost = Message::error(ErrorCode::MessagesLost, "3 private messages sent while ...");
    assert_eq!(state.incoming(Frame::new(0, lost)), Reaction::Nothing);
    assert_eq!(
        events(&mut state),
        [Event::Lagged {
            stream: "inbox".into(),
            dropped: 3
        }]
    );
    assert!(matches!(
        state.incoming(Frame::new(3, publish(1))),
        Reaction::Lost(_)
    ));
}

#[test]
fn heartbeat_pongs_are_swallowed() {
    let mut state = state();
    let ping = state.ping();
    assert_eq!(ping.message, Message::Ping);
    assert_eq!(
        state.incoming(Frame::new(ping.request_id, Message::Pong)),
        Reaction::Nothing
    );
    assert_eq!(events(&mut state), []);
}

#[test]
fn closing_fails_everything_that_waits_and_ends_the_streams() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 0, 8);
    let (_, mut waiting) = ask(&mut state, Message::Ping, Flags::empty());
    let (_, mut resend) = ask(&mut state, publish(1), Flags::RECEIPT);
    state.disconnected("gone".into());
    let (_, mut fresh) = ask(&mut state, publish(2), Flags::RECEIPT);

    state.fail_all();
    state.close();
    assert!(matches!(waiting.try_recv(), Ok(Err(Error::Disconnected))));
    assert!(matches!(resend.try_recv(), Ok(Err(Error::Closed))));
    assert!(matches!(fresh.try_recv(), Ok(Err(Error::Closed))));
    assert!(matches!(
        a.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
    assert_eq!(events(&mut state).last(), Some(&Event::Closed));
}
