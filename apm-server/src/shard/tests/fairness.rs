//! One connection's flood and another's single message on the same shard:
//! the flood gets one allowance of commands ahead, however deep it would
//! go, so the small message is handled within one turn of it.

use std::sync::Arc;

use apm_core::Flags;
use apm_core::message::Role;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::outbox::Conn;

use super::super::{Command, Outgoing, Target};
use super::{Harness, seqs, taken};

/// A connection of `user` with the configured budgets, registered.
fn connect(h: &mut Harness, user: &str) -> Arc<Conn> {
    let config = &h.hub.config;
    let conn = Arc::new(
        Conn::new(
            h.hub.next_conn_id(),
            Arc::from(user),
            Role::User,
            config.outbound_queue,
            config.outbound_bytes,
            config.slow_consumer,
        )
        .with_budgets(config.ingress_allowance(), config.reply_budget()),
    );
    let (reply, _rx) = oneshot::channel();
    h.shard.handle(Command::Register {
        conn: conn.clone(),
        welcome: Bytes::from_static(b"welcome"),
        reply,
    });
    drop(conn.take_all());
    conn
}

fn publish(conn: &Arc<Conn>, channel: &str, payload: Bytes) -> Command {
    Command::Send(Outgoing {
        conn: conn.clone(),
        request_id: 1,
        flags: Flags::empty(),
        to: Target::Channel(channel.into()),
        kind: 0,
        msg_id: 0,
        payload,
    })
}

#[test]
fn a_small_message_waits_at_most_one_allowance_behind_a_flood() {
    let mut h = Harness::memory();
    let flood = connect(&mut h, "flood");
    let calm = connect(&mut h, "calm");
    let reader = connect(&mut h, "reader");
    h.sub(&reader, "calm", None);
    drop(taken(&reader));
    let big = Bytes::from(vec![7u8; 256 * 1024]);
    // The flood's task queues 256 KiB publishes while its allowance lets
    // it: it would go on for a hundred.
    let mut allowance = flood.allowance();
    let mut queued = 0;
    while queued < 100 && allowance.has_room(&flood) {
        let cmd = publish(&flood, "void", big.clone());
        allowance.charge(cmd.ingress_cost(&h.hub.config));
        h.hub.shards[0].push(cmd);
        queued += 1;
    }
    let limit = h.hub.config.ingress_allowance();
    assert!(queued <= limit / big.len() + 1, "{queued} queued");
    h.hub.shards[0].push(publish(&calm, "calm", Bytes::from_static(b"hi")));
    let mut ahead = 0;
    while let Some(cmd) = h.hub.shards[0].pop() {
        let is_calm = matches!(&cmd, Command::Send(o) if o.conn.id == calm.id);
        h.shard.handle(cmd);
        if is_calm {
            break;
        }
        ahead += 1;
    }
    assert_eq!(seqs(&taken(&reader)), vec![1], "handled");
    assert!(
        ahead * big.len() <= limit + big.len(),
        "{ahead} large publishes went first"
    );
}
