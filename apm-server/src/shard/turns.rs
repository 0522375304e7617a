//! Turns: when a shard's queue is deep, every connection with commands
//! waiting is served in turn, each up to a quota of bytes per turn, so a
//! connection flooding large messages delays another's small one by one
//! turn, not by its whole backlog. Commands of one connection keep their
//! order; commands of no connection (deliveries handed over by other
//! shards or the store, presence answers) go first in every turn.
//!
//! A shallow queue is served first come, first served: sorting it into
//! lanes would cost more than the wait it saves.

use std::collections::VecDeque;

use crate::config::Config;
use crate::fast_map::HashMap;
use crate::ingress::Ingress;

use super::Shard;
use super::command::Command;

/// Commands queued beyond this make the loop serve in turns.
pub(super) const DEEP: usize = 64;
/// Bytes of commands (as their connections are charged for them) one
/// connection has handled per turn; at least one command.
pub(super) const TURN_BYTES: usize = 64 * 1024;

/// The commands taken off a deep queue, one lane per connection.
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// Commands of no connection.
    system: VecDeque<Command>,
    /// Connection id -> its waiting commands, oldest first.
    lanes: HashMap<u64, VecDeque<Command>>,
    /// Connections with waiting commands, in the order they are served.
    order: VecDeque<u64>,
}

impl Turns {
    /// Whether no command waits here.
    pub(super) fn is_empty(&self) -> bool {
        self.system.is_empty() && self.order.is_empty()
    }

    fn push(&mut self, cmd: Command) {
        match cmd.connection_id() {
            None => self.system.push_back(cmd),
            Some(id) => {
                let lane = self.lanes.entry(id).or_default();
                if lane.is_empty() {
                    self.order.push_back(id);
                }
                lane.push_back(cmd);
            }
        }
    }

    /// Serves one turn: the commands of no connection, then each waiting
    /// connection up to [`TURN_BYTES`]. Returns how many were handled.
    fn turn(&mut self, config: &Config, mut handle: impl FnMut(Command)) -> usize {
        let mut handled = 0;
        while let Some(cmd) = self.system.pop_front() {
            handle(cmd);
            handled += 1;
        }
        for _ in 0..self.order.len() {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&id) else {
                continue;
            };
            let mut spent = 0;
            while let Some(cmd) = lane.front() {
                let cost = cmd.ingress_cost(config);
                if spent > 0 && spent + cost > TURN_BYTES {
                    break;
                }
                spent += cost;
                if let Some(cmd) = lane.pop_front() {
                    handle(cmd);
                    handled += 1;
                }
            }
            if lane.is_empty() {
                self.lanes.remove(&id);
            } else {
                self.order.push_back(id);
            }
        }
        handled
    }
}

/// One step of a shard's loop: a command first come, first served while
/// the queue is shallow, else everything queued sorted into lanes and one
/// turn served. Returns how many commands were handled (0: none waits).
pub(super) fn step(shard: &mut Shard, ingress: &Ingress, turns: &mut Turns) -> usize {
    if turns.is_empty() && ingress.len() <= DEEP {
        return match ingress.pop() {
            Some(cmd) => {
                shard.handle(cmd);
                1
            }
            None => 0,
        };
    }
    while let Some(cmd) = ingress.pop() {
        turns.push(cmd);
    }
    let hub = shard.ctx.hub.clone();
    turns.turn(&hub.config, |cmd| shard.handle(cmd))
}
