//! Incremental fetch sessions (KIP-227), sans IO.
//!
//! A consumer fetching many partitions from one broker would otherwise name every partition in
//! every Fetch request. With a session, the first (full) request names them all and the broker
//! answers with a session id; later (incremental) requests carry only what changed — partitions
//! added or whose fetch offset, maximum bytes or leader epoch changed — plus the partitions to
//! forget, and the broker answers only for partitions that have something to say.
//!
//! ```text
//!             full fetch (id 0, epoch 0)
//!   ┌────────┐ ─────────────────────────► ┌──────────────────┐
//!   │  None  │                            │ Open { id, epoch }│──► incremental fetch (id, epoch),
//!   └────────┘ ◄───────────────────────── └──────────────────┘    epoch += 1 after each answer
//!         FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
//!         FETCH_SESSION_TOPIC_ID_ERROR, a failed request, or id 0 in the answer
//! ```

use std::collections::BTreeMap;

use crate::codec::ErrorCode;

use super::producer::TopicPartition;

/// What a session remembers of one partition: the fields of a Fetch request's partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPartition {
    /// The offset to fetch from.
    pub fetch_offset: i64,
    /// `max.partition.fetch.bytes`: the most bytes to return for this partition.
    pub max_bytes: i32,
    /// The leader epoch the client knows (KIP-320), -1 if unknown.
    pub current_leader_epoch: i32,
    /// The epoch of the last fetched batch (KIP-595 divergence detection), -1 if unknown.
    pub last_fetched_epoch: i32,
    /// The Fetch field `log_start_offset`: a follower's field, which clients send as -1.
    pub log_start_offset: i64,
}

/// The partitions to put in the next Fetch request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPlan {
    /// The session id (KIP-227); 0 without a session.
    pub session_id: i32,
    /// The session epoch: 0 opens a session (full fetch), -1 closes it or fetches without one.
    pub session_epoch: i32,
    /// Partitions to send (all of them in a full fetch, the changed ones in an incremental one).
    pub partitions: Vec<(TopicPartition, SessionPartition)>,
    /// Partitions to drop from the session (incremental fetches only).
    pub forgotten: Vec<TopicPartition>,
}

impl FetchPlan {
    /// Whether this is a full fetch (it sends every partition and opens a new session).
    pub fn is_full(&self) -> bool {
        self.session_epoch == 0
    }
}

/// One broker's fetch session.
#[derive(Clone, Debug, Default)]
pub struct FetchSession {
    /// `(id, next epoch)` once the broker opened a session.
    open: Option<(i32, i32)>,
    /// What the broker's session holds, as of the last successful answer.
    confirmed: BTreeMap<TopicPartition, SessionPartition>,
    /// What the request in flight will make it hold, once answered.
    pending: Option<BTreeMap<TopicPartition, SessionPartition>>,
}

impl FetchSession {
    /// A session not opened yet: the first fetch is full.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session id, if one is open.
    pub fn id(&self) -> Option<i32> {
        self.open.map(|(id, _)| id)
    }

    /// Plans the next request for the partitions `wanted` from this broker.
    pub fn plan(&mut self, wanted: &BTreeMap<TopicPartition, SessionPartition>) -> FetchPlan {
        self.pending = Some(wanted.clone());
        let Some((id, epoch)) = self.open else {
            return FetchPlan {
                session_id: 0,
                session_epoch: 0,
                partitions: wanted.iter().map(|(tp, p)| (tp.clone(), *p)).collect(),
                forgotten: Vec::new(),
            };
        };
        let partitions = wanted
            .iter()
            .filter(|(tp, p)| self.confirmed.get(*tp) != Some(p))
            .map(|(tp, p)| (tp.clone(), *p))
            .collect();
        let forgotten = self.confirmed.keys().filter(|tp| !wanted.contains_key(*tp)).cloned().collect();
        FetchPlan { session_id: id, session_epoch: epoch, partitions, forgotten }
    }

    /// Applies the top-level result of the request planned last. Returns `false` when the
    /// session was lost and the next fetch is a full one.
    pub fn handle_response(&mut self, error: ErrorCode, session_id: i32) -> bool {
        let pending = self.pending.take();
        if error != ErrorCode::NONE {
            let session_error = error == ErrorCode::FETCH_SESSION_ID_NOT_FOUND
                || error == ErrorCode::INVALID_FETCH_SESSION_EPOCH
                || error == ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR;
            if session_error || self.open.is_some() {
                self.reset();
            }
            return false;
        }
        let Some(pending) = pending else { return self.open.is_some() };
        if session_id == 0 {
            // The broker did not open (or closed) a session: every fetch stays a full one.
            self.reset();
            return false;
        }
        let epoch = match self.open {
            Some((id, epoch)) if id == session_id => next_epoch(epoch),
            _ => 1,
        };
        self.open = Some((session_id, epoch));
        self.confirmed = pending;
        true
    }

    /// The request failed without an answer: its effect on the session is unknown, so the next
    /// fetch starts a new session.
    pub fn handle_failure(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.open = None;
        self.confirmed.clear();
        self.pending = None;
    }
}

/// Epochs run 1, 2, …, i32::MAX, then wrap to 1 (0 means "full fetch").
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn part(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            max_bytes: 1024,
            current_leader_epoch: 0,
            last_fetched_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn wanted(entries: &[(i32, i64)]) -> BTreeMap<TopicPartition, SessionPartition> {
        entries.iter().map(|(p, o)| (tp(*p), part(*o))).collect()
    }

    #[test]
    fn first_fetch_is_full_then_only_changes_are_sent() {
        let mut s = FetchSession::new();
        let plan = s.plan(&wanted(&[(0, 0), (1, 0), (2, 0)]));
        assert!(plan.is_full());
        assert_eq!(plan.partitions.len(), 3);
        assert!(s.handle_response(ErrorCode::NONE, 77));

        // Partition 1 advanced; 2 is dropped; 3 is new.
        let plan = s.plan(&wanted(&[(0, 0), (1, 10), (3, 0)]));
        assert_eq!((plan.session_id, plan.session_epoch), (77, 1));
        let sent: Vec<i32> = plan.partitions.iter().map(|(tp, _)| tp.partition).collect();
        assert_eq!(sent, vec![1, 3]);
        assert_eq!(plan.forgotten, vec![tp(2)]);
        assert!(s.handle_response(ErrorCode::NONE, 77));

        let plan = s.plan(&wanted(&[(0, 0), (1, 10), (3, 0)]));
        assert_eq!(plan.session_epoch, 2);
        assert!(plan.partitions.is_empty() && plan.forgotten.is_empty());
    }

    #[test]
    fn session_errors_fall_back_to_a_full_fetch() {
        for error in [
            ErrorCode::FETCH_SESSION_ID_NOT_FOUND,
            ErrorCode::INVALID_FETCH_SESSION_EPOCH,
            ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR,
        ] {
            let mut s = FetchSession::new();
            s.plan(&wanted(&[(0, 0)]));
            assert!(s.handle_response(ErrorCode::NONE, 5));
            s.plan(&wanted(&[(0, 3)]));
            assert!(!s.handle_response(error, 0));
            let plan = s.plan(&wanted(&[(0, 3), (1, 0)]));
            assert!(plan.is_full(), "{error:?}");
            assert_eq!(plan.partitions.len(), 2);
        }
    }

    #[test]
    fn a_failed_request_or_a_zero_session_id_means_full_fetches() {
        let mut s = FetchSession::new();
        s.plan(&wanted(&[(0, 0)]));
        assert!(s.handle_response(ErrorCode::NONE, 9));
        s.plan(&wanted(&[(0, 1)]));
        s.handle_failure();
        assert!(s.plan(&wanted(&[(0, 1)])).is_full());
        assert!(!s.handle_response(ErrorCode::NONE, 0));
        assert!(s.plan(&wanted(&[(0, 1)])).is_full());
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(1), 2);
    }
}
