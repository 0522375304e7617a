//! Server-side subscriptions in the session state: told, routed to their
//! own stream, resumed after a reconnect without a gap or a duplicate,
//! ended.

use super::*;

fn state_with_server(capacity: usize) -> (State, mpsc::Receiver<Deliver>) {
    let (server, rx) = mpsc::channel(capacity);
    let inbox = mpsc::channel(8).0;
    let state = State::new(&welcome(1), inbox, server, Limits::DEFAULT_MAX_FRAME_LEN);
    (state, rx)
}

fn server_sub(channel: &str, seq: u64) -> Frame {
    let ok = SubOk {
        channel: channel.into(),
        seq,
        oldest: 1,
    };
    Frame::new(0, Message::ServerSub(ok))
}

fn server_unsub(channel: &str) -> Frame {
    let u = UnsubOk {
        channel: channel.into(),
    };
    Frame::new(0, Message::ServerUnsub(u))
}

#[test]
fn messages_go_to_the_server_stream_once_told() {
    let (mut state, mut rx) = state_with_server(8);
    // Before the notice, the channel is nobody's.
    state.incoming(to("orders", 1));
    assert_eq!(seqs(&mut rx), []);
    assert_eq!(state.incoming(server_sub("orders", 1)), Reaction::Nothing);
    assert_eq!(
        events(&mut state),
        [Event::ServerSubscribed {
            channel: "orders".into()
        }]
    );
    state.incoming(to("orders", 2));
    state.incoming(to("orders", 2));
    state.incoming(to("orders", 3));
    assert_eq!(seqs(&mut rx), [2, 3]);
}

#[test]
fn after_a_reconnect_it_resumes_from_its_last_seq_and_drops_the_live_overlap() {
    let (mut state, mut rx) = state_with_server(16);
    state.incoming(server_sub("feed", 0));
    state.incoming(to("feed", 1));
    state.incoming(to("feed", 2));
    assert_eq!(seqs(&mut rx), [1, 2]);
    let _ = events(&mut state);

    state.disconnected("gone".into());
    state.reconnected(&welcome(1));
    // The server re-joins it itself: no client `Sub` for it.
    assert!(state.resubscribe().is_empty());
    // The server joined it at seq 5: 3 to 5 were missed.
    let Reaction::Send(resume) = state.incoming(server_sub("feed", 5)) else {
        panic!("expected a resume");
    };
    assert_eq!(
        resume.message,
        Message::Sub(Sub {
            channel: "feed".into(),
            since: Some(2),
        })
    );
    // Live 6 arrives before the resume is answered; the replay brings it.
    state.incoming(to("feed", 6));
    state.incoming(sub_ok(resume.request_id, "feed", 6, 1));
    for seq in 3..=6 {
        state.incoming(to("feed", seq));
    }
    state.incoming(to("feed", 7));
    assert_eq!(seqs(&mut rx), [3, 4, 5, 6, 7]);
    // Not announced again.
    assert!(
        !events(&mut state)
            .iter()
            .any(|e| matches!(e, Event::ServerSubscribed { .. }))
    );
}

#[test]
fn a_resume_past_retention_is_reported() {
    let (mut state, mut rx) = state_with_server(16);
    state.incoming(server_sub("feed", 2));
    state.disconnected("gone".into());
    state.reconnected(&welcome(1));
    let Reaction::Send(resume) = state.incoming(server_sub("feed", 40)) else {
        panic!("expected a resume");
    };
    let _ = events(&mut state);
    state.incoming(sub_ok(resume.request_id, "feed", 40, 31));
    assert_eq!(
        events(&mut state),
        [Event::Lagged {
            stream: "feed".into(),
            dropped: 28
        }]
    );
    state.incoming(to("feed", 31));
    assert_eq!(seqs(&mut rx), [31]);
}

#[test]
fn the_client_cannot_end_it_and_the_server_can() {
    let (mut state, mut rx) = state_with_server(8);
    state.incoming(server_sub("alerts", 0));
    let _ = events(&mut state);
    // Asked to leave, the state keeps it until the server says so.
    let _ = state.unsubscribe("alerts".into(), None);
    state.incoming(to("alerts", 1));
    assert_eq!(seqs(&mut rx), [1]);
    state.incoming(server_unsub("alerts"));
    assert_eq!(
        events(&mut state),
        [Event::ServerUnsubscribed {
            channel: "alerts".into()
        }]
    );
    state.incoming(to("alerts", 2));
    assert_eq!(seqs(&mut rx), []);
}

#[test]
fn one_the_server_did_not_confirm_for_a_whole_connection_has_ended() {
    let (mut state, _rx) = state_with_server(8);
    state.incoming(server_sub("old", 0));
    state.incoming(server_sub("kept", 0));
    state.disconnected("first".into());
    state.reconnected(&welcome(1));
    let _ = state.resubscribe();
    // Only `kept` comes back on this connection.
    assert_eq!(state.incoming(server_sub("kept", 0)), Reaction::Nothing);
    let _ = events(&mut state);
    state.disconnected("second".into());
    assert_eq!(
        events(&mut state),
        [
            Event::Disconnected {
                reason: "second".into()
            },
            Event::ServerUnsubscribed {
                channel: "old".into()
            }
        ]
    );
}

#[test]
fn a_subscription_the_app_holds_too_keeps_its_stream_until_dropped() {
    let (mut state, mut server_rx) = state_with_server(8);
    let mut own = subscribed(&mut state, "room", 0, 8);
    state.incoming(server_sub("room", 0));
    state.incoming(to("room", 1));
    assert_eq!(seqs(&mut own), [1]);
    drop(own);
    // The app let go of its Subscription: the server stream takes over,
    // and the channel is not left.
    assert_eq!(state.incoming(to("room", 2)), Reaction::Nothing);
    assert_eq!(seqs(&mut server_rx), [2]);
}
