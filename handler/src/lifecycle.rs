//! The runtime's lifecycle as typed events, for code ([`Runtime::events`](crate::Runtime::events))
//! and for `tracing` (target `handler::lifecycle`: failures at `warn`, the rest at `debug`).

use kafka_wire::TopicPartition;
use tokio::sync::broadcast;

/// Something that happened in a [`Runtime`](crate::Runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// A partition was assigned and its worker started.
    Assigned {
        /// The partition.
        partition: TopicPartition,
    },
    /// Partitions were revoked: their workers take no more records, their running records
    /// finish (within `drain_timeout`), then what was handled is committed.
    Revoked {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// A partition's records still running at the end of `drain_timeout` were cancelled; they
    /// are not committed and its next owner handles them again.
    DrainTimedOut {
        /// The partition.
        partition: TopicPartition,
    },
    /// Partitions were lost (the member was out of the group; another may own them already):
    /// their running records are cancelled and nothing is committed for them.
    Lost {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// Handled offsets were committed (at-least-once mode): the next offset to handle, per
    /// partition.
    Committed {
        /// The offsets committed.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// A commit failed; the offsets are committed again at the next one.
    CommitFailed {
        /// Why.
        error: String,
    },
    /// A record's handler failed (at-least-once mode); it is retried in place after a backoff.
    RecordFailed {
        /// Its partition.
        partition: TopicPartition,
        /// Its offset.
        offset: i64,
        /// Attempts so far.
        attempts: u32,
        /// What the handler reported.
        error: String,
    },
    /// A transaction committed outputs and input offsets (exactly-once mode): the next offset
    /// to handle, per partition.
    TransactionCommitted {
        /// The input offsets committed.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// A transaction was aborted (exactly-once mode): its partitions go back to their committed
    /// offsets and are handled again.
    TransactionAborted {
        /// Its partitions.
        partitions: Vec<TopicPartition>,
        /// Why: the handler's decision, or the failure.
        reason: String,
    },
    /// The runtime stopped, after its final drain and commit.
    Stopped {
        /// The error it stopped with, if any.
        error: Option<String>,
    },
}

/// Where the runtime sends its events: to every receiver of
/// [`Runtime::events`](crate::Runtime::events) (a bounded channel: a receiver that falls behind
/// by more than [`CAPACITY`] events is told how many it missed) and to `tracing`.
#[derive(Clone, Debug)]
pub(crate) struct Events(broadcast::Sender<Lifecycle>);

/// Events kept for a receiver that has not read them yet.
pub(crate) const CAPACITY: usize = 1024;

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::Sender::new(CAPACITY))
    }
}

impl Events {
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Lifecycle> {
        self.0.subscribe()
    }

    pub(crate) fn emit(&self, event: Lifecycle) {
        match &event {
            Lifecycle::DrainTimedOut { .. }
            | Lifecycle::Lost { .. }
            | Lifecycle::CommitFailed { .. }
            | Lifecycle::RecordFailed { .. }
            | Lifecycle::TransactionAborted { .. }
            | Lifecycle::Stopped { error: Some(_) } => {
                tracing::warn!(target: "handler::lifecycle", ?event, "handler runtime");
            }
            _ => tracing::debug!(target: "handler::lifecycle", ?event, "handler runtime"),
        }
        // No receiver is fine: the events are for whoever listens.
        let _ = self.0.send(event);
    }
}
