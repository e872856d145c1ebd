//! The vocabulary the state machines of [`crate::proto`] are driven with (the group members of
//! [`crate::proto::group::Member`], the transaction manager): each request a machine hands out
//! carries a [`RequestId`] (its answer, or its failure, goes back with it) and a [`Target`]
//! (which broker it must go to), and has a [`RequestKind`] (the Kafka API it calls). A driver
//! that knows these three can route, retry and report for any machine.

use std::time::Duration;

use super::backoff::Backoff;
use crate::codec::ApiKey;

/// Names a request a state machine handed out; its answer is handed back with it. Unique within
/// one machine; the machine ignores ids it does not know (answers it gave up on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Any broker (FindCoordinator).
    AnyBroker,
    /// The coordinator of a group or transactional id, found with FindCoordinator: its node id.
    Coordinator(i32),
    /// A given node, such as a partition's leader.
    Node(i32),
}

impl Target {
    /// The node the request must go to, if any particular one.
    pub fn node(self) -> Option<i32> {
        match self {
            Self::AnyBroker => None,
            Self::Coordinator(node) | Self::Node(node) => Some(node),
        }
    }
}

/// The kind of a request: the Kafka API it calls (`RequestKind::END_TXN`, ...). Its `Debug`
/// prints Kafka's name of the API (`EndTxn`).
pub type RequestKind = ApiKey;

/// The backoff of a machine's retries: its jitter drawn from `seed` mixed with `stream` when a
/// seed is configured (so a simulation replays the same delays, and the backoffs of one machine
/// do not jitter in step), from a random seed otherwise.
pub(crate) fn backoff(base: Duration, max: Duration, seed: Option<u64>, stream: u64) -> Backoff {
    match seed {
        Some(seed) => Backoff::with_seed(base, max, seed ^ stream.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
        None => Backoff::new(base, max),
    }
}
