//! The transactional producer's driver: `init_transactions`, `begin_transaction`,
//! `send_offsets_to_transaction`, `commit_transaction` and `abort_transaction` on [`Producer`].
//!
//! The decisions (states, which request next, what an error code means, when EndTxn may go,
//! v1 or v2) are the sans-IO [`TransactionManager`]'s, whose documentation has the state diagram
//! (KIP-98, KIP-360, KIP-447, KIP-890). This module does the IO: it sends the manager's requests
//! to the coordinators and hands back the answers, feeds it the fate of every record of the
//! transaction (from the producer driver's completions), and applies its events to the producer
//! core (a new producer id or epoch).
//!
//! Under v1 a record's partition is added to the transaction before the record is appended, so
//! no batch of a partition can be drained before AddPartitionsToTxn succeeded. An abort stops
//! the core from draining, waits for the requests in flight, and drops what is left before the
//! manager sends EndTxn.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::Instrument as _;

use super::admin::{Admin, CoordinatorType as AdminCoordinator};
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
use crate::codec::messages::ProduceRequest;
use crate::codec::ErrorCode;
use crate::proto::driving::RequestId;
use crate::proto::producer::{ProduceFailure, TopicPartition};
use crate::proto::transaction::{
    CoordinatorType, FatalReason, GroupMetadata, OutgoingRequest, ProduceOutcome, TransactionManager, TxnConfig,
    TxnError, TxnEvent, TxnOffset, TxnRequest, TxnState,
};

/// A consumer's place in its group, sent with the offsets of a transaction so that the group
/// coordinator refuses them from a member that has been fenced (KIP-447).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The consumer's `group.id`.
    pub group_id: String,
    /// The generation (classic protocol) or member epoch (KIP-848); -1 outside a group.
    pub generation_id: i32,
    /// The member id the group coordinator gave the consumer.
    pub member_id: String,
    /// The consumer's `group.instance.id` (KIP-345 static membership), if any.
    pub group_instance_id: Option<String>,
}

struct State {
    manager: TransactionManager,
    /// Records of the open transaction not completed yet (queued or in flight).
    unsettled: usize,
    /// `send_offsets` calls finished (OffsetsAdded events), to tell a caller its own finished.
    offsets_added: u64,
    offsets_asked: u64,
}

/// The transactional part of a producer.
pub(super) struct Transactions {
    id: String,
    state: Mutex<State>,
    /// Something the manager waits for happened (a record completed).
    changed: Notify,
    /// One task at a time talks to the coordinators for the manager; others wait their turn.
    pump: tokio::sync::Mutex<()>,
}

impl Transactions {
    /// The span of one commit or abort, for tracing what each transaction cost.
    fn span(&self, decision: &'static str) -> tracing::Span {
        let (_, epoch) = lock(&self.state).manager.producer_id();
        tracing::info_span!("kafka.transaction", transactional_id = %self.id, decision, producer_epoch = epoch)
    }

    pub(super) fn new(
        id: String,
        transaction_timeout: Duration,
        retry_backoff: Duration,
        retry_backoff_max: Duration,
    ) -> Self {
        let mut config = TxnConfig::new(id.as_str());
        config.transaction_timeout = transaction_timeout;
        config.retry_backoff = retry_backoff;
        config.retry_backoff_max = retry_backoff_max.max(retry_backoff);
        Self {
            id,
            state: Mutex::new(State {
                manager: TransactionManager::new(config),
                unsettled: 0,
                offsets_added: 0,
                offsets_asked: 0,
            }),
            changed: Notify::new(),
            pump: tokio::sync::Mutex::new(()),
        }
    }

    /// Called by `send` before a record for `tp` is appended: the transaction must be open.
    /// Returns whether the partition is in the transaction; if not (under v1, until
    /// AddPartitionsToTxn is answered), [`wait_partition_added`](Self::wait_partition_added)
    /// waits for it.
    pub(super) fn add_partition(&self, tp: &TopicPartition) -> Result<bool> {
        lock(&self.state).manager.add_partition(tp).map_err(|e| self.error(e))
    }

    /// Waits until `tp` is in the transaction.
    pub(super) async fn wait_partition_added(&self, inner: &Inner, tp: &TopicPartition) -> Result<()> {
        self.pump_until(inner, |st| st.manager.add_partition(tp).map(|ok| ok.then_some(()))).await
    }

    /// A record of the transaction is being appended (`1`), or after all was not (`-1`): the
    /// manager hears of the fate of every appended one.
    pub(super) fn record_appended(&self, delta: isize) {
        let mut st = lock(&self.state);
        st.unsettled = st.unsettled.saturating_add_signed(delta);
    }

    /// Once the transaction can only be aborted (or is being aborted), fails its queued
    /// records at once with [`Error::TransactionAborted`], as Java's producer does: they could
    /// never be committed, and whoever waits for them learns it now rather than at their
    /// delivery timeout. Records in flight wait for their answers. Returns whether any was
    /// failed (their completions are then in the core).
    pub(super) fn discard_queued_if_aborting(&self, inner: &Inner) -> bool {
        let aborting = matches!(lock(&self.state).manager.state(), TxnState::AbortableError | TxnState::Aborting);
        if !aborting {
            return false;
        }
        let (any, sequenced) = {
            let mut core = lock(&inner.core);
            let before = core.buffered_bytes();
            let sequenced = core.abort_queued();
            (core.buffered_bytes() != before || sequenced, sequenced)
        };
        if sequenced {
            // Dropped batches held sequence numbers: the epoch must be bumped (KIP-360).
            let _ = lock(&self.state).manager.require_epoch_bump();
        }
        any
    }

    /// Wakes whoever waits for the manager (the driver died).
    pub(super) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Records of the transaction completed (a batch of the producer driver's completions).
    pub(super) fn records_completed<'a>(
        &self,
        results: impl IntoIterator<Item = std::result::Result<(), &'a ProduceFailure>>,
    ) {
        {
            let mut st = lock(&self.state);
            for result in results {
                let outcome = match result {
                    Ok(()) => ProduceOutcome::Acknowledged,
                    Err(ProduceFailure::TransactionAborted) => ProduceOutcome::Discarded,
                    Err(ProduceFailure::Broker { code, .. }) => ProduceOutcome::Failed(Some(*code)),
                    Err(_) => ProduceOutcome::Failed(None),
                };
                st.unsettled = st.unsettled.saturating_sub(1);
                st.manager.produce_settled(outcome);
            }
        }
        self.changed.notify_waiters();
    }

    /// Runs the manager until `done` says so: sends its requests, hands back the answers, applies
    /// its events, and waits for records to settle. Gives up after `max.block.ms`.
    async fn pump_until<T>(
        &self,
        inner: &Inner,
        mut done: impl FnMut(&mut State) -> std::result::Result<Option<T>, TxnError>,
    ) -> Result<T> {
        let _turn = self.pump.lock().await;
        let deadline = tokio::time::Instant::now() + inner.config.max_block;
        loop {
            let changed = self.changed.notified();
            inner.check_alive()?;
            let (request, wakeup) = {
                let mut st = lock(&self.state);
                self.apply_events(inner, &mut st);
                if let Some(value) = done(&mut st).map_err(|e| self.error(e))? {
                    return Ok(value);
                }
                let request = st.manager.next_request(Instant::now());
                (request, st.manager.next_wakeup())
            };
            if let Some(request) = request {
                self.send(inner, request).await;
                // The answer may have made the transaction abortable: the driver then fails its
                // queued records at once rather than at its next turn.
                inner.wake.notify_one();
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = lock(&self.state).manager.state();
                return Err(Error::Timeout {
                    what: format!("transactional.id {} ({state:?})", self.id),
                    after: inner.config.max_block,
                });
            }
            let until = wakeup.map_or(deadline, |w| tokio::time::Instant::from_std(w).min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn apply_events(&self, inner: &Inner, st: &mut State) {
        while let Some(event) = st.manager.poll_event() {
            match event {
                TxnEvent::ProducerIdChanged { producer_id, epoch } => {
                    lock(&inner.core).set_producer_id(producer_id, epoch);
                    inner.wake.notify_one();
                }
                TxnEvent::OffsetsAdded { .. } => st.offsets_added += 1,
                _ => {}
            }
        }
    }

    /// Sends one of the manager's requests and hands its answer back. If this future is
    /// dropped before the answer, the manager is told the request got none (it sends it again):
    /// otherwise it would wait for that answer forever.
    async fn send(&self, inner: &Inner, out: OutgoingRequest) {
        let OutgoingRequest { id, target, request } = out;
        let mut unanswered = Unanswered { txn: self, id, armed: true };
        let node = target.node();
        let answered = match (request, node) {
            (TxnRequest::FindCoordinator { key, key_type }, _) => {
                let kind = match key_type {
                    CoordinatorType::Group => AdminCoordinator::Group,
                    _ => AdminCoordinator::Transaction,
                };
                let found = Admin::new(inner.client.clone())
                    .with_timeout(inner.config.request_timeout)
                    .find_coordinator(&key, kind)
                    .await;
                let mut st = lock(&self.state);
                match found {
                    Ok(node) => st.manager.handle_find_coordinator(id, Ok(node), Instant::now()),
                    Err(e) => match e.code() {
                        Some(code) => st.manager.handle_find_coordinator(id, Err(code), Instant::now()),
                        None => st.manager.handle_no_response(id, Instant::now()),
                    },
                }
                true
            }
            (
                TxnRequest::InitProducerId { transactional_id, transaction_timeout_ms, producer_id, producer_epoch },
                Some(node),
            ) => {
                let request = InitProducerIdRequest {
                    transactional_id: Some((*transactional_id).into()),
                    transaction_timeout_ms,
                    producer_id,
                    producer_epoch,
                    ..Default::default()
                };
                match inner.client.send_control(node, &request, i16::MAX).await {
                    Ok(r) => {
                        let mut st = lock(&self.state);
                        st.manager.handle_init_producer_id(
                            id,
                            r.error_code,
                            r.producer_id,
                            r.producer_epoch,
                            Instant::now(),
                        );
                        true
                    }
                    Err(e) => log_failed("InitProducerId", &e),
                }
            }
            (
                TxnRequest::AddPartitionsToTxn { transactional_id, producer_id, producer_epoch, partitions },
                Some(node),
            ) => {
                let topics = super::by_topic(partitions.iter().map(|tp| (tp.topic.clone(), tp.partition)))
                    .into_iter()
                    .map(|(name, partitions)| AddPartitionsToTxnTopic {
                        name: (&*name).into(),
                        partitions,
                        ..Default::default()
                    })
                    .collect();
                let request = AddPartitionsToTxnRequest {
                    v3_and_below_transactional_id: (*transactional_id).into(),
                    v3_and_below_producer_id: producer_id,
                    v3_and_below_producer_epoch: producer_epoch,
                    v3_and_below_topics: topics,
                    ..Default::default()
                };
                // Versions 4+ are the brokers' batched form.
                match inner.client.send_control(node, &request, 3).await {
                    Ok(r) => {
                        let results: Vec<(TopicPartition, ErrorCode)> = r
                            .results_by_topic_v3_and_below
                            .iter()
                            .flat_map(|t| {
                                t.results_by_partition
                                    .iter()
                                    .map(|p| (TopicPartition::new(&*t.name, p.partition_index), p.partition_error_code))
                            })
                            .collect();
                        lock(&self.state).manager.handle_add_partitions(id, &results, Instant::now());
                        true
                    }
                    Err(e) => log_failed("AddPartitionsToTxn", &e),
                }
            }
            (TxnRequest::AddOffsetsToTxn { transactional_id, producer_id, producer_epoch, group_id }, Some(node)) => {
                let request = AddOffsetsToTxnRequest {
                    transactional_id: (*transactional_id).into(),
                    producer_id,
                    producer_epoch,
                    group_id: (*group_id).into(),
                    ..Default::default()
                };
                match inner.client.send_control(node, &request, i16::MAX).await {
                    Ok(r) => {
                        lock(&self.state).manager.handle_add_offsets(id, r.error_code, Instant::now());
                        true
                    }
                    Err(e) => log_failed("AddOffsetsToTxn", &e),
                }
            }
            (
                TxnRequest::TxnOffsetCommit {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    group,
                    offsets,
                    transaction_v2,
                },
                Some(node),
            ) => {
                let topics = super::by_topic(offsets.iter().map(|(tp, o)| {
                    let partition = TxnOffsetCommitRequestPartition {
                        partition_index: tp.partition,
                        committed_offset: o.offset,
                        committed_leader_epoch: o.leader_epoch.unwrap_or(-1),
                        committed_metadata: o.metadata.as_deref().map(Into::into),
                        ..Default::default()
                    };
                    (tp.topic.clone(), partition)
                }))
                .into_iter()
                .map(|(name, partitions)| TxnOffsetCommitRequestTopic {
                    name: (&*name).into(),
                    partitions,
                    ..Default::default()
                })
                .collect();
                let request = TxnOffsetCommitRequest {
                    transactional_id: (*transactional_id).into(),
                    group_id: (*group.group_id).into(),
                    producer_id,
                    producer_epoch,
                    generation_id: group.generation_id,
                    member_id: (*group.member_id).into(),
                    group_instance_id: group.group_instance_id.as_deref().map(Into::into),
                    topics,
                    ..Default::default()
                };
                // v5 adds the offsets to the transaction itself: only for a v2 transaction.
                let max_version = if transaction_v2 { i16::MAX } else { 4 };
                match inner.client.send_control(node, &request, max_version).await {
                    Ok(r) => {
                        let results: Vec<(TopicPartition, ErrorCode)> = r
                            .topics
                            .iter()
                            .flat_map(|t| {
                                t.partitions
                                    .iter()
                                    .map(|p| (TopicPartition::new(&*t.name, p.partition_index), p.error_code))
                            })
                            .collect();
                        lock(&self.state).manager.handle_txn_offset_commit(id, &results, Instant::now());
                        true
                    }
                    Err(e) => log_failed("TxnOffsetCommit", &e),
                }
            }
            (
                TxnRequest::EndTxn { transactional_id, producer_id, producer_epoch, commit, transaction_v2 },
                Some(node),
            ) => {
                let request = EndTxnRequest {
                    transactional_id: (*transactional_id).into(),
                    producer_id,
                    producer_epoch,
                    committed: commit,
                    ..Default::default()
                };
                // v5 bumps the epoch on every EndTxn: only for a v2 transaction.
                let max_version = if transaction_v2 { i16::MAX } else { 4 };
                match inner.client.send_control(node, &request, max_version).await {
                    Ok(r) => {
                        let mut st = lock(&self.state);
                        st.manager.handle_end_txn(id, r.error_code, r.producer_id, r.producer_epoch, Instant::now());
                        true
                    }
                    Err(e) => log_failed("EndTxn", &e),
                }
            }
            (_, None) => false,
        };
        unanswered.armed = !answered;
    }

    /// The client error for a manager's error.
    fn error(&self, e: TxnError) -> Error {
        match e {
            TxnError::Fatal(FatalReason::Fenced { code }) => Error::Fenced { transactional_id: self.id.clone(), code },
            TxnError::Fatal(reason) => Error::InvalidState {
                operation: "transaction".into(),
                reason: format!("transactional.id {} failed for good: {reason}", self.id),
            },
            TxnError::Abortable(reason) => Error::TransactionAbortable { reason: reason.to_string() },
            TxnError::InvalidState { operation, state } => Error::InvalidState {
                operation: format!("{operation:?}"),
                reason: format!("the transactional producer is {state:?}"),
            },
        }
    }

    /// Tells the manager the cluster's finalized `transaction.version` (KIP-890 v2 also needs
    /// EndTxn v5, Produce v12 and TxnOffsetCommit v5 from the broker).
    async fn learn_protocol(&self, inner: &Inner) {
        use crate::codec::messages::{EndTxnRequest as E, TxnOffsetCommitRequest as T};
        let Ok(conn) = inner.client.any_broker().await else { return };
        let level = conn.finalized_feature("transaction.version").unwrap_or(0);
        let apis = conn.version_for::<E>().is_ok_and(|v| v >= 5)
            && conn.version_for::<ProduceRequest>().is_ok_and(|v| v >= 12)
            && conn.version_for::<T>().is_ok_and(|v| v >= 5);
        lock(&self.state).manager.set_transaction_version(if apis { level } else { level.min(1) });
    }
}

/// Tells the manager that its request `id` got no answer, unless disarmed because one was
/// handed back: on every path out of [`Transactions::send`], its future being dropped included.
struct Unanswered<'a> {
    txn: &'a Transactions,
    id: RequestId,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.txn.state).manager.handle_no_response(self.id, Instant::now());
        }
    }
}

/// A request without an answer: the manager retries it (a lost EndTxn keeps its decision).
fn log_failed(what: &str, e: &Error) -> bool {
    tracing::debug!(error = %e, "{what} got no answer");
    false
}

fn invalid(operation: &str, reason: &str) -> Error {
    Error::InvalidState { operation: operation.into(), reason: reason.into() }
}

/// `Ok(Some(()))` once the manager is `Ready` again, its error if it failed.
fn ready(st: &mut State) -> std::result::Result<Option<()>, TxnError> {
    match st.manager.state() {
        TxnState::Ready => Ok(Some(())),
        TxnState::AbortableError | TxnState::FatalError => {
            Err(st.manager.error().expect("an error state has its error"))
        }
        _ => Ok(None),
    }
}

impl Producer {
    fn transactions(&self, operation: &str) -> Result<&Transactions> {
        self.inner.txn.as_ref().ok_or_else(|| invalid(operation, "the producer has no transactional.id"))
    }

    /// Registers this instance as the owner of its `transactional.id` (InitProducerId): a
    /// transaction an older instance left open is aborted, and that instance is fenced.
    ///
    /// Cancel-safe: if the future is dropped (or times out) before it finished, calling it again
    /// goes on from where it was.
    pub async fn init_transactions(&self) -> Result<()> {
        let t = self.transactions("init_transactions")?;
        lock(&t.state).manager.init().map_err(|e| t.error(e))?;
        t.pump_until(&self.inner, ready).await?;
        t.learn_protocol(&self.inner).await;
        Ok(())
    }

    /// Opens a transaction: records sent from now on are committed or aborted together.
    pub fn begin_transaction(&self) -> Result<()> {
        let t = self.transactions("begin_transaction")?;
        let mut st = lock(&t.state);
        st.manager.begin().map_err(|e| t.error(e))?;
        st.unsettled = 0;
        // Offsets of an earlier transaction that never finished (it was aborted) are not
        // waited for.
        st.offsets_added = st.offsets_asked;
        self.inner.transactions_v2.store(st.manager.is_transaction_v2(), Ordering::Release);
        Ok(())
    }

    /// Puts a consumer group's offsets into the open transaction (KIP-447): they are committed
    /// if and only if the transaction is. `group` comes from the consumer
    /// ([`Consumer::group_metadata`](super::Consumer::group_metadata)); the group coordinator
    /// refuses the offsets of a member that is no longer in the group's current generation,
    /// and the transaction must then be aborted.
    ///
    /// Cancel-safe in the sense that nothing is lost or left half done: once called, the
    /// offsets are part of the transaction whether or not the future is awaited to the end,
    /// and `commit_transaction` waits until they are added.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let t = self.transactions("send_offsets_to_transaction")?;
        let group = GroupMetadata {
            group_id: group.group_id.as_str().into(),
            generation_id: group.generation_id,
            member_id: group.member_id.as_str().into(),
            group_instance_id: group.group_instance_id.as_deref().map(Into::into),
        };
        let offsets = offsets
            .iter()
            .map(|(tp, o)| {
                let offset = TxnOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.as_deref().map(Into::into),
                };
                (tp.clone(), offset)
            })
            .collect();
        let mine = {
            let mut st = lock(&t.state);
            st.manager.send_offsets(group, offsets).map_err(|e| t.error(e))?;
            st.offsets_asked += 1;
            st.offsets_asked
        };
        t.pump_until(&self.inner, |st| match st.manager.state() {
            _ if st.offsets_added >= mine => Ok(Some(())),
            TxnState::InTransaction => Ok(None),
            _ => Err(st.manager.error().unwrap_or(TxnError::InvalidState {
                operation: crate::proto::transaction::TxnOperation::SendOffsets,
                state: st.manager.state(),
            })),
        })
        .await
    }

    /// Sends every record of the open transaction, waits until all are acknowledged, then
    /// commits it (EndTxn). If any record failed, nothing is committed and the error says the
    /// transaction must be aborted.
    ///
    /// Cancel-safe: if the future is dropped (or the call times out after `max.block.ms`), the
    /// commit stays under way (the transaction cannot be aborted any more) and calling
    /// `commit_transaction` again finishes it.
    pub async fn commit_transaction(&self) -> Result<()> {
        let t = self.transactions("commit_transaction")?;
        self.commit(t).instrument(t.span("commit")).await
    }

    async fn commit(&self, t: &Transactions) -> Result<()> {
        {
            let mut st = lock(&t.state);
            let unsettled = st.unsettled;
            st.manager.commit(unsettled).map_err(|e| t.error(e))?;
        }
        lock(&self.inner.core).flush();
        self.inner.wake.notify_one();
        t.pump_until(&self.inner, ready).await?;
        t.learn_protocol(&self.inner).await;
        Ok(())
    }

    /// Aborts the open transaction: records not sent yet fail with
    /// [`Error::TransactionAborted`], and nothing of the transaction becomes visible to
    /// read_committed consumers. The producer is then ready for the next transaction.
    ///
    /// Cancel-safe: if the future is dropped (or the call times out), the abort stays under way
    /// and calling `abort_transaction` again finishes it.
    pub async fn abort_transaction(&self) -> Result<()> {
        let t = self.transactions("abort_transaction")?;
        self.abort(t).instrument(t.span("abort")).await
    }

    async fn abort(&self, t: &Transactions) -> Result<()> {
        {
            let mut st = lock(&t.state);
            let unsettled = st.unsettled;
            st.manager.abort(unsettled).map_err(|e| t.error(e))?;
        }
        // Stop sending, let the requests in flight finish, then drop what is left; the manager
        // sends EndTxn once every record is accounted for.
        lock(&self.inner.core).set_paused(true);
        // Resumed however this ends; meanwhile the driver keeps failing the aborted
        // transaction's queued records, so none of them is drained.
        let resume = Resume(&self.inner);
        let in_flight = self.wait_in_flight().await;
        let gap = {
            let mut core = lock(&self.inner.core);
            let sequenced = core.abort_queued();
            sequenced || core.needs_producer_id()
        };
        if gap {
            // Dropped batches held sequence numbers: the epoch must be bumped (KIP-360).
            let _ = lock(&t.state).manager.require_epoch_bump();
        }
        self.inner.deliver_completions();
        let result = match in_flight {
            Ok(()) => t.pump_until(&self.inner, ready).await,
            Err(e) => Err(e),
        };
        drop(resume);
        result?;
        t.learn_protocol(&self.inner).await;
        Ok(())
    }

    async fn wait_in_flight(&self) -> Result<()> {
        self.inner.check_alive()?;
        let deadline = tokio::time::Instant::now() + self.inner.config.max_block;
        loop {
            let progressed = self.inner.progress.notified();
            if lock(&self.inner.core).in_flight_requests() == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return Err(Error::Timeout {
                    what: "produce requests of the aborted transaction".into(),
                    after: self.inner.config.max_block,
                });
            }
        }
    }
}

/// Lets the producer core drain again when an abort ends, or its future is dropped.
struct Resume<'a>(&'a Inner);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        lock(&self.0.core).set_paused(false);
        self.0.wake.notify_one();
    }
}
