//! The store's error type.

use std::time::Duration;

/// What can go wrong with a [`KvStore`](crate::KvStore).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client failed (connecting, creating or describing the topic, producing).
    #[error(transparent)]
    Kafka(#[from] kafka_wire::Error),
    /// The topic exists but is not compacted: old values of keys would be deleted by retention,
    /// and a store loaded from it would lose them.
    #[error("topic {topic} is not compacted (cleanup.policy={cleanup_policy}); a store needs cleanup.policy=compact")]
    NotCompacted {
        /// The topic.
        topic: String,
        /// Its `cleanup.policy`.
        cleanup_policy: String,
    },
    /// The topic does not exist, and the store was told not to create it.
    #[error("topic {topic} does not exist")]
    NoTopic {
        /// The topic.
        topic: String,
    },
    /// A read before the store loaded the topic up to the end offsets of its start.
    #[error("store of topic {topic} is not ready: still loading the topic")]
    NotReady {
        /// The topic.
        topic: String,
    },
    /// The store stopped following its topic (closed, or its consumer failed): its contents
    /// are no longer kept up to date.
    #[error("store of topic {topic} stopped: {reason}")]
    Stopped {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A key or value could not be encoded for writing.
    #[error("cannot encode the {what}: {reason}")]
    Encode {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// The commands topic and the store topic of an atomic store have different partition
    /// counts: a key's commands and its value would not be on the same partition number, so
    /// one owner could not hold both.
    #[error("topics {commands} ({commands_partitions} partitions) and {store} ({store_partitions} partitions) are not co-partitioned: an atomic store needs the same partition count")]
    NotCoPartitioned {
        /// The commands topic.
        commands: String,
        /// Its partitions.
        commands_partitions: usize,
        /// The store topic.
        store: String,
        /// Its partitions.
        store_partitions: usize,
    },
    /// A wait did not end in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
