//! The transactional producer (KIP-98, KIP-447, KIP-890): `init_transactions`, `begin`,
//! `send_offsets_to_transaction`, `commit`, `abort` on [`Producer`].
//!
//! # States
//!
//! ```text
//!  Uninitialized ──init_transactions──► Ready ──begin──► InTransaction ──commit──► Ready
//!                                         ▲                 │   │
//!                                         │        a record │   │ abort
//!                                         │        failed,  ▼   ▼
//!                                         └──── abort ── Abortable
//!
//!  any state ── PRODUCER_FENCED / INVALID_PRODUCER_EPOCH / INVALID_TXN_STATE ──► Fatal
//! ```
//!
//! Nothing is sent after `Fatal`: a newer instance with the same `transactional.id` owns it.
//!
//! # Transactions v1 and v2
//!
//! The protocol is picked once per transaction, at `begin`, from the cluster's finalized
//! `transaction.version` feature (not only from API versions). Under v1 every partition is added
//! with AddPartitionsToTxn before its first batch may be sent (so `send` waits for that on a
//! partition's first record), and the consumer offsets' group with AddOffsetsToTxn. Under v2
//! (KIP-890, `transaction.version` ≥ 2) Produce v12+ and TxnOffsetCommit v5 add them implicitly,
//! and every EndTxn (v5+) bumps the producer epoch: the answer carries the epoch to use next.
//!
//! A commit is only sent once every record of the transaction is acknowledged; if any failed,
//! the transaction can only be aborted. An abort stops sending, waits for the requests in flight,
//! fails the records not sent yet, and ends the transaction; if a dropped batch already held
//! sequence numbers the epoch is bumped through the coordinator (InitProducerId with the current
//! id and epoch, KIP-360) so the next transaction's sequences start clean.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::admin::{Admin, CoordinatorType};
use super::consumer::OffsetAndMetadata;
use super::error::{Error, Result};
use super::producer::{lock, Inner, Producer};
use crate::codec::messages::add_offsets_to_txn::AddOffsetsToTxnRequest;
use crate::codec::messages::add_partitions_to_txn::{AddPartitionsToTxnRequest, AddPartitionsToTxnTopic};
use crate::codec::messages::end_txn::EndTxnRequest;
use crate::codec::messages::init_producer_id::InitProducerIdRequest;
use crate::codec::messages::txn_offset_commit::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use crate::codec::messages::Request;
use crate::codec::ErrorCode;
use crate::proto::producer::TopicPartition;

/// A consumer's place in its group, sent with the offsets of a transaction so that the group
/// coordinator refuses them from a member that has been fenced (KIP-447).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    /// The generation (classic protocol) or member epoch (KIP-848); -1 outside a group.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Clone, Debug)]
enum Phase {
    Uninitialized,
    Ready,
    InTransaction,
    /// Only `abort_transaction` may follow.
    Abortable(String),
    Fatal(Error),
}

struct State {
    phase: Phase,
    /// The protocol of the open transaction (decided at `begin`).
    v2: bool,
    /// Partitions added to the open transaction (v1), or written to (v2).
    partitions: HashSet<TopicPartition>,
    /// Groups whose offsets are in the open transaction.
    groups: HashSet<String>,
    coordinator: Option<i32>,
    /// The first record of the open transaction that failed.
    failed_record: Option<String>,
}

/// The transactional part of a producer.
pub(super) struct Transactions {
    id: String,
    timeout_ms: i32,
    state: Mutex<State>,
    /// One AddPartitionsToTxn at a time, so concurrent sends to a new partition add it once.
    adding: tokio::sync::Mutex<()>,
    /// What the coordinator's broker reported of KIP-890 support, at the last InitProducerId.
    cluster_v2: AtomicBool,
}

impl Transactions {
    pub(super) fn new(id: String, timeout: Duration) -> Self {
        Self {
            id,
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            state: Mutex::new(State {
                phase: Phase::Uninitialized,
                v2: false,
                partitions: HashSet::new(),
                groups: HashSet::new(),
                coordinator: None,
                failed_record: None,
            }),
            adding: tokio::sync::Mutex::new(()),
            cluster_v2: AtomicBool::new(false),
        }
    }

    /// Called by `send` before a record is appended for `tp`: the transaction must be open, and
    /// under v1 the partition must have been added to it.
    pub(super) async fn before_send(&self, inner: &Inner, tp: &TopicPartition) -> Result<()> {
        let v2 = {
            let mut st = lock(&self.state);
            check_phase(&st.phase, "send")?;
            if st.v2 {
                st.partitions.insert(tp.clone());
            }
            if st.v2 || st.partitions.contains(tp) {
                return Ok(());
            }
            st.v2
        };
        debug_assert!(!v2);
        let _one = self.adding.lock().await;
        if lock(&self.state).partitions.contains(tp) {
            return Ok(());
        }
        let (producer_id, producer_epoch) = lock(&inner.core).producer_id();
        let request = AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: self.id.as_str().into(),
            v3_and_below_producer_id: producer_id,
            v3_and_below_producer_epoch: producer_epoch,
            v3_and_below_topics: vec![AddPartitionsToTxnTopic {
                name: (&*tp.topic).into(),
                partitions: vec![tp.partition],
                ..Default::default()
            }],
            ..Default::default()
        };
        // Versions 4+ are the brokers' batched form.
        let response = self
            .to_coordinator(inner, &request, 3, |r| {
                r.results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| &t.results_by_partition)
                    .map(|p| p.partition_error_code)
                    .find(|c| *c != ErrorCode::NONE)
                    .unwrap_or(ErrorCode::NONE)
            })
            .await?;
        self.settle(response, "AddPartitionsToTxn")?;
        lock(&self.state).partitions.insert(tp.clone());
        Ok(())
    }

    /// Notes a record of the open transaction that failed: the transaction cannot commit.
    pub(super) fn record_failed(&self, error: &Error) {
        let mut st = lock(&self.state);
        if matches!(st.phase, Phase::InTransaction) && st.failed_record.is_none() {
            st.failed_record = Some(error.to_string());
        }
    }

    /// Whether the open transaction wrote anything (records or offsets), so that the
    /// coordinator knows of it and EndTxn must end it.
    fn started(&self) -> bool {
        let st = lock(&self.state);
        !st.partitions.is_empty() || !st.groups.is_empty()
    }

    /// Whether the protocol of the open (or next) transaction is v2.
    pub(super) fn is_v2(&self) -> bool {
        lock(&self.state).v2
    }

    /// Whether the coordinator's broker reports `transaction.version` ≥ 2 (KIP-890 part 2) and
    /// offers the API versions v2 needs (EndTxn v5, Produce v12, TxnOffsetCommit v5).
    async fn learn_protocol(&self, inner: &Inner) {
        use crate::codec::messages::{EndTxnRequest as E, ProduceRequest as P, TxnOffsetCommitRequest as T};
        let Some(node) = lock(&self.state).coordinator else { return };
        let Ok(conn) = inner.client.control(node).await else { return };
        let v2 = conn.finalized_feature("transaction.version").is_some_and(|v| v >= 2)
            && conn.version_for::<E>().is_ok_and(|v| v >= 5)
            && conn.version_for::<P>().is_ok_and(|v| v >= 12)
            && conn.version_for::<T>().is_ok_and(|v| v >= 5);
        self.cluster_v2.store(v2, Ordering::Release);
    }

    /// Sends `request` to the transaction coordinator, finding it first, and retries while the
    /// coordinator moves or loads, the connection fails, or an earlier transaction of this id
    /// is still completing (CONCURRENT_TRANSACTIONS). Gives up after `max.block.ms`. The answer's
    /// other error codes are the caller's to judge: `code` extracts the one that decides.
    async fn to_coordinator<R: Request>(
        &self,
        inner: &Inner,
        request: &R,
        max_version: i16,
        code: impl Fn(&R::Response) -> ErrorCode,
    ) -> Result<(R::Response, ErrorCode)> {
        let deadline = tokio::time::Instant::now() + inner.config.max_block;
        let mut delay = Duration::from_millis(20);
        loop {
            let cached = lock(&self.state).coordinator;
            let node = match cached {
                Some(n) => Ok(n),
                None => Admin::new(inner.client.clone())
                    .with_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
                    .find_coordinator(&self.id, CoordinatorType::Transaction)
                    .await
                    .inspect(|n| lock(&self.state).coordinator = Some(*n)),
            };
            let outcome = match node {
                Ok(node) => inner.client.send_control(node, request, max_version).await,
                Err(e) => Err(e),
            };
            let last = match outcome {
                Ok(response) => {
                    let c = code(&response);
                    if is_coordinator_moved(c) {
                        lock(&self.state).coordinator = None;
                    } else if c != ErrorCode::CONCURRENT_TRANSACTIONS {
                        return Ok((response, c));
                    }
                    Error::broker(c, None, format!("{} for transactional.id {}", R::API_KEY, self.id))
                }
                Err(e) if e.is_retriable() => {
                    lock(&self.state).coordinator = None;
                    e
                }
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(last);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Judges a coordinator's final error code: fencing is fatal for this instance, an abortable
    /// error leaves only `abort_transaction`.
    fn settle<T>(&self, (response, code): (T, ErrorCode), what: &str) -> Result<T> {
        if code == ErrorCode::NONE {
            return Ok(response);
        }
        Err(self.fail(code, what))
    }

    fn fail(&self, code: ErrorCode, what: &str) -> Error {
        let mut st = lock(&self.state);
        if is_fenced(code) {
            let e = Error::Fenced { transactional_id: self.id.clone(), code };
            st.phase = Phase::Fatal(e.clone());
            return e;
        }
        let e = Error::broker(code, None, format!("{what} for transactional.id {}", self.id));
        if code == ErrorCode::INVALID_TXN_STATE || code == ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED {
            st.phase = Phase::Fatal(e.clone());
        } else if matches!(st.phase, Phase::InTransaction) {
            st.phase = Phase::Abortable(e.to_string());
        }
        e
    }
}

/// PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH from a coordinator: a newer epoch of this
/// transactional.id exists.
fn is_fenced(code: ErrorCode) -> bool {
    code == ErrorCode::PRODUCER_FENCED || code == ErrorCode::INVALID_PRODUCER_EPOCH
}

fn is_coordinator_moved(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_COORDINATOR
        || code == ErrorCode::COORDINATOR_NOT_AVAILABLE
        || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
}

fn check_phase(phase: &Phase, operation: &str) -> Result<()> {
    match phase {
        Phase::InTransaction => Ok(()),
        Phase::Fatal(e) => Err(e.clone()),
        Phase::Abortable(reason) => Err(Error::TransactionAbortable { reason: reason.clone() }),
        Phase::Uninitialized => Err(invalid(operation, "init_transactions was not called")),
        Phase::Ready => Err(invalid(operation, "no transaction is open (begin_transaction)")),
    }
}

fn invalid(operation: &str, reason: &str) -> Error {
    Error::InvalidState { operation: operation.into(), reason: reason.into() }
}

impl Producer {
    fn transactions(&self, operation: &str) -> Result<&Transactions> {
        self.inner.txn.as_ref().ok_or_else(|| invalid(operation, "the producer has no transactional.id"))
    }

    /// Registers this instance as the owner of its `transactional.id` (InitProducerId): a
    /// transaction an older instance left open is aborted, and that instance is fenced.
    pub async fn init_transactions(&self) -> Result<()> {
        let t = self.transactions("init_transactions")?;
        match &lock(&t.state).phase {
            Phase::Uninitialized => {}
            Phase::Fatal(e) => return Err(e.clone()),
            _ => return Err(invalid("init_transactions", "already initialized")),
        }
        self.init_producer_id(t, (-1, -1)).await?;
        t.learn_protocol(&self.inner).await;
        lock(&t.state).phase = Phase::Ready;
        Ok(())
    }

    /// InitProducerId for the transactional id; with a current id and epoch (KIP-360, v3+) the
    /// coordinator bumps the epoch of this instance instead of fencing it.
    async fn init_producer_id(&self, t: &Transactions, (producer_id, producer_epoch): (i64, i16)) -> Result<()> {
        let request = InitProducerIdRequest {
            transactional_id: Some(t.id.as_str().into()),
            transaction_timeout_ms: t.timeout_ms,
            producer_id,
            producer_epoch,
            ..Default::default()
        };
        let response = t.to_coordinator(&self.inner, &request, i16::MAX, |r| r.error_code).await?;
        let response = t.settle(response, "InitProducerId")?;
        lock(&self.inner.core).set_producer_id(response.producer_id, response.producer_epoch);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Opens a transaction: records sent from now on are committed or aborted together.
    pub fn begin_transaction(&self) -> Result<()> {
        let t = self.transactions("begin_transaction")?;
        let v2 = t.cluster_v2.load(Ordering::Acquire);
        let mut st = lock(&t.state);
        match &st.phase {
            Phase::Ready => {}
            Phase::Fatal(e) => return Err(e.clone()),
            Phase::Uninitialized => return Err(invalid("begin_transaction", "init_transactions was not called")),
            _ => return Err(invalid("begin_transaction", "a transaction is already open")),
        }
        st.phase = Phase::InTransaction;
        st.v2 = v2;
        st.partitions.clear();
        st.groups.clear();
        st.failed_record = None;
        self.inner.transactions_v2.store(v2, Ordering::Release);
        Ok(())
    }

    /// Puts a consumer group's offsets into the open transaction (KIP-447): they are committed
    /// if and only if the transaction is. `group` comes from the consumer
    /// ([`Consumer::group_metadata`](super::Consumer::group_metadata)); the group coordinator
    /// refuses the offsets of a member that is no longer in the group's current generation,
    /// and the transaction must then be aborted.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let t = self.transactions("send_offsets_to_transaction")?;
        let v2 = {
            let st = lock(&t.state);
            check_phase(&st.phase, "send_offsets_to_transaction")?;
            st.v2
        };
        let (producer_id, producer_epoch) = lock(&self.inner.core).producer_id();
        if !v2 && !lock(&t.state).groups.contains(&group.group_id) {
            let request = AddOffsetsToTxnRequest {
                transactional_id: t.id.as_str().into(),
                producer_id,
                producer_epoch,
                group_id: group.group_id.as_str().into(),
                ..Default::default()
            };
            let response = t.to_coordinator(&self.inner, &request, i16::MAX, |r| r.error_code).await?;
            t.settle(response, "AddOffsetsToTxn")?;
            lock(&t.state).groups.insert(group.group_id.clone());
        }
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for (tp, o) in offsets {
            let partition = TxnOffsetCommitRequestPartition {
                partition_index: tp.partition,
                committed_offset: o.offset,
                committed_leader_epoch: o.leader_epoch.unwrap_or(-1),
                committed_metadata: o.metadata.as_deref().map(Into::into),
                ..Default::default()
            };
            match topics.iter_mut().find(|t| *t.name == *tp.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(TxnOffsetCommitRequestTopic {
                    name: (&*tp.topic).into(),
                    partitions: vec![partition],
                    ..Default::default()
                }),
            }
        }
        let request = TxnOffsetCommitRequest {
            transactional_id: t.id.as_str().into(),
            group_id: group.group_id.as_str().into(),
            producer_id,
            producer_epoch,
            generation_id: group.generation_id,
            member_id: group.member_id.as_str().into(),
            group_instance_id: group.group_instance_id.as_deref().map(Into::into),
            topics,
            ..Default::default()
        };
        // v5 adds the offsets to the transaction itself, which only a v2 transaction may rely on.
        let max_version = if v2 { i16::MAX } else { 4 };
        self.txn_offset_commit(t, &group.group_id, &request, max_version).await?;
        lock(&t.state).groups.insert(group.group_id.clone());
        Ok(())
    }

    /// TxnOffsetCommit goes to the group's coordinator, which may move independently of the
    /// transaction coordinator.
    async fn txn_offset_commit(
        &self,
        t: &Transactions,
        group: &str,
        request: &TxnOffsetCommitRequest,
        max_version: i16,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.inner.config.max_block;
        let mut delay = Duration::from_millis(20);
        loop {
            let admin = Admin::new(self.inner.client.clone())
                .with_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let last = match admin.find_coordinator(group, CoordinatorType::Group).await {
                Ok(node) => match self.inner.client.send_control(node, request, max_version).await {
                    Ok(response) => {
                        let code = response
                            .topics
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .map(|p| p.error_code)
                            .find(|c| *c != ErrorCode::NONE)
                            .unwrap_or(ErrorCode::NONE);
                        let retriable = is_coordinator_moved(code)
                            || code == ErrorCode::CONCURRENT_TRANSACTIONS
                            || code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                            || code == ErrorCode::REQUEST_TIMED_OUT;
                        if !retriable {
                            return t.settle(((), code), "TxnOffsetCommit");
                        }
                        Error::broker(code, None, format!("TxnOffsetCommit for group {group}"))
                    }
                    Err(e) if e.is_retriable() => e,
                    Err(e) => return Err(e),
                },
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(last);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends every record of the open transaction, waits until all are acknowledged, then
    /// commits it (EndTxn). If any record failed, nothing is committed and the error says the
    /// transaction must be aborted.
    pub async fn commit_transaction(&self) -> Result<()> {
        let t = self.transactions("commit_transaction")?;
        check_phase(&lock(&t.state).phase, "commit_transaction")?;
        self.settle_records(t).await?;
        if let Some(failed) = lock(&t.state).failed_record.clone() {
            lock(&t.state).phase = Phase::Abortable(failed.clone());
            return Err(Error::TransactionAbortable { reason: failed });
        }
        // A transaction that wrote nothing is unknown to the coordinator: nothing to end.
        if t.started() {
            self.end_transaction(t, true).await?;
        }
        lock(&t.state).phase = Phase::Ready;
        Ok(())
    }

    /// Waits until every record sent is acknowledged or failed (up to `max.block.ms`). A
    /// transactional core that needs a new epoch sends nothing more: its transaction is over.
    async fn settle_records(&self, t: &Transactions) -> Result<()> {
        lock(&self.inner.core).flush();
        self.inner.wake.notify_one();
        let deadline = tokio::time::Instant::now() + self.inner.config.max_block;
        loop {
            let progressed = self.inner.progress.notified();
            {
                let core = lock(&self.inner.core);
                if core.is_idle() {
                    return Ok(());
                }
                if core.needs_producer_id() && core.in_flight_requests() == 0 {
                    drop(core);
                    let reason = "a record of the transaction could not be written".to_string();
                    lock(&t.state).phase = Phase::Abortable(reason.clone());
                    return Err(Error::TransactionAbortable { reason });
                }
            }
            if self.inner.driver_finished.load(Ordering::Acquire) {
                return Err(Error::Closed { broker: "producer".into() });
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return Err(Error::Timeout {
                    what: "records of the transaction".into(),
                    after: self.inner.config.max_block,
                });
            }
        }
    }

    /// Aborts the open transaction: records not sent yet fail with
    /// [`Error::TransactionAborted`], and nothing of the transaction becomes visible to
    /// read_committed consumers. The producer is then ready for the next transaction.
    pub async fn abort_transaction(&self) -> Result<()> {
        let t = self.transactions("abort_transaction")?;
        match &lock(&t.state).phase {
            Phase::InTransaction | Phase::Abortable(_) => {}
            Phase::Fatal(e) => return Err(e.clone()),
            Phase::Uninitialized => return Err(invalid("abort_transaction", "init_transactions was not called")),
            Phase::Ready => return Err(invalid("abort_transaction", "no transaction is open")),
        }
        // Stop sending, let the requests in flight finish, then drop what is left.
        lock(&self.inner.core).set_paused(true);
        let drained = self.wait_in_flight().await;
        let sequenced = {
            let mut core = lock(&self.inner.core);
            let sequenced = core.abort_queued();
            core.set_paused(false);
            sequenced || core.needs_producer_id()
        };
        self.inner.deliver_completions();
        drained?;
        if t.started() {
            self.end_transaction(t, false).await?;
        }
        if sequenced && !t.is_v2() {
            let current = lock(&self.inner.core).producer_id();
            self.init_producer_id(t, current).await?;
        }
        lock(&t.state).phase = Phase::Ready;
        Ok(())
    }

    async fn wait_in_flight(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.inner.config.max_block;
        loop {
            let progressed = self.inner.progress.notified();
            if lock(&self.inner.core).in_flight_requests() == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return Err(Error::Timeout { what: "produce requests of the aborted transaction".into(), after: self.inner.config.max_block });
            }
        }
    }

    /// EndTxn with the decision; a lost answer is retried with the same decision. Under v2 the
    /// answer carries the bumped epoch for the next transaction.
    async fn end_transaction(&self, t: &Transactions, commit: bool) -> Result<()> {
        let (producer_id, producer_epoch) = lock(&self.inner.core).producer_id();
        let request = EndTxnRequest {
            transactional_id: t.id.as_str().into(),
            producer_id,
            producer_epoch,
            committed: commit,
            ..Default::default()
        };
        let v2 = t.is_v2();
        let max_version = if v2 { i16::MAX } else { 4 };
        let response = t.to_coordinator(&self.inner, &request, max_version, |r| r.error_code).await?;
        let response = t.settle(response, if commit { "EndTxn(commit)" } else { "EndTxn(abort)" })?;
        if v2 && response.producer_id >= 0 && response.producer_epoch >= 0 {
            lock(&self.inner.core).set_producer_id(response.producer_id, response.producer_epoch);
        }
        Ok(())
    }
}
