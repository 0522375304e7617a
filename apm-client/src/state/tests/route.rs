//! Unit tests of routing deliveries: resume points, the inbox's seen seqs,
//! full and dropped streams.

use super::*;

#[test]
fn deliveries_at_or_below_the_resume_point_are_dropped() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 5, 8);
    for seq in [4, 5, 6, 6, 5, 7] {
        assert_eq!(state.incoming(to("a", seq)), Reaction::Nothing);
    }
    assert_eq!(seqs(&mut a), [6, 7]);
    // The resume point moved with what was handed out.
    state.disconnected("gone".into());
    let since = state.resubscribe().remove(0).message;
    assert_eq!(
        since,
        Message::Sub(Sub {
            channel: "a".into(),
            since: Some(7)
        })
    );
}

#[test]
fn deliveries_for_other_channels_are_not_routed() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 0, 8);
    assert_eq!(state.incoming(to("b", 1)), Reaction::Nothing);
    assert_eq!(seqs(&mut a), []);
    // "b" has its own seqs: its 1 does not move "a"'s resume point.
    state.incoming(to("a", 1));
    assert_eq!(seqs(&mut a), [1]);
}

#[test]
fn a_full_stream_drops_and_reports_lagged() {
    let mut state = state();
    let mut a = subscribed(&mut state, "a", 0, 1);
    for seq in 1..=3 {
        state.incoming(to("a", seq));
    }
    let lagged = |dropped| Event::Lagged {
        stream: "a".into(),
        dropped,
    };
    assert_eq!(events(&mut state), [lagged(1), lagged(2)]);
    assert_eq!(seqs(&mut a), [1]);
    // Dropped is dropped: a replay of 2 does not bring it back.
    state.incoming(to("a", 2));
    assert_eq!(seqs(&mut a), []);
}

#[test]
fn a_dropped_subscription_leaves_the_channel() {
    let mut state = state();
    drop(subscribed(&mut state, "a", 0, 8));
    let Reaction::Send(frame) = state.incoming(to("a", 1)) else {
        panic!("expected an Unsub")
    };
    assert_eq!(
        frame.message,
        Message::Unsub(Unsub {
            channel: "a".into()
        })
    );
    // Its answer is expected and ignored; the channel is gone.
    let unsub_ok = Message::UnsubOk(UnsubOk {
        channel: "a".into(),
    });
    assert_eq!(
        state.incoming(Frame::new(frame.request_id, unsub_ok)),
        Reaction::Nothing
    );
    assert_eq!(state.incoming(to("a", 2)), Reaction::Nothing);
}

#[test]
fn the_inbox_drops_what_it_handed_out_already() {
    let (mut state, mut inbox) = state_with_inbox(2);
    let mine = |seq| deliver(Conversation::User("alice".into()), seq);
    let all = |seq| deliver(Conversation::Broadcast, seq);
    // Copies of what alice sent bob carry bob's seqs: never deduplicated.
    let sent = |seq| deliver(Conversation::User("bob".into()), seq);

    for frame in [mine(1), mine(2), mine(3)] {
        state.incoming(frame);
    }
    // Full at 3: not handed out, so not counted as seen.
    let lagged = Event::Lagged {
        stream: "inbox".into(),
        dropped: 1,
    };
    assert_eq!(events(&mut state), [lagged]);
    assert_eq!(seqs(&mut inbox), [1, 2]);

    // The server's replay on reconnect.
    for frame in [mine(1), mine(2), mine(3), all(1), all(1)] {
        state.incoming(frame);
    }
    assert_eq!(seqs(&mut inbox), [3, 1]);
    for frame in [sent(1), sent(1)] {
        state.incoming(frame);
    }
    assert_eq!(seqs(&mut inbox), [1, 1]);

    // A server with a new epoch starts its seqs again.
    state.reconnected(&welcome(2));
    state.incoming(mine(1));
    assert_eq!(seqs(&mut inbox), [1]);
}
