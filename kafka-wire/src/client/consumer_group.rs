//! The consumer's group membership: subscriptions, the sans-IO
//! [`GroupMember`](crate::proto::group::GroupMember) driven from the consumer's driver task, and
//! the rebalance callbacks, which run on the application's task inside `poll`.
//!
//! Revocation is cooperative with the application: when the group takes partitions away, the
//! next `poll` calls the listener's `on_partitions_revoked`, commits the partitions' positions
//! (with auto-commit on), drops them, and only then lets the member rejoin. So the offsets of
//! processed records are committed before another member can start on those partitions.
//!
//! A loss waits for the application the same way: the member can lose its partitions on the
//! driver task, between two polls (its lease lapsed, the coordinator failed), but the lost
//! partitions stay in place (their positions unchanged) and the member does not rejoin until a
//! `poll` has called `on_partitions_lost` and dropped them. Meanwhile the member has no
//! generation, so commits and `group_metadata` are refused: records of the old generation can
//! never be committed with a newer one (see *Losses wait for the application* in
//! [`crate::proto::group`]).
//!
//! The rebalance steps are cancel-safe: a step is taken off the queue only once its callback
//! (and, for a revocation, its commit) has finished, one step at a time; a `poll` dropped in the
//! middle leaves it to the next `poll`, which runs it again from the start.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::consumer::{Consumer, Inner, OffsetAndMetadata};
use super::error::{Error, Result};
use crate::codec::messages::ConsumerGroupHeartbeatResponse;
use crate::codec::messages::MetadataResponse;
use crate::codec::ErrorCode;
use crate::proto::assignor;
use crate::proto::consumer_protocol::{ConsumerGroupConfig, ConsumerGroupMember};
use crate::proto::driving::{RequestId, RequestKind, Target};
use crate::proto::group::{GroupConfig, GroupEvent, GroupMember, GroupRequest, GroupResponse, Member, Tp};
use crate::proto::producer::TopicPartition;

/// What the application subscribed to.
pub(super) enum Subscription {
    Topics(BTreeSet<String>),
    Pattern(regex::Regex),
}

/// A rebalance step the application's task must run.
#[derive(Clone)]
enum AppEvent {
    Revoke(Vec<TopicPartition>),
    Assigned(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

#[derive(Default)]
pub(super) struct GroupState {
    subscription: Option<Subscription>,
    member: Option<Box<dyn Member + Send>>,
    responses: Option<mpsc::UnboundedReceiver<(RequestId, GroupResponse)>>,
    responder: Option<mpsc::UnboundedSender<(RequestId, GroupResponse)>>,
    /// Steps for the application; the front one is removed only once it has been run.
    app_events: VecDeque<AppEvent>,
    /// Held while a step runs: one at a time, even when clones of the consumer poll at once.
    app_turn: Arc<tokio::sync::Mutex<()>>,
    commits: HashMap<u64, oneshot::Sender<std::result::Result<(), ErrorCode>>>,
    last_auto_commit: Option<Instant>,
    /// Partition counts of the subscribed topics, as last given to the member.
    counts: BTreeMap<String, i32>,
    /// Leave requests sent and not answered yet.
    leaves_in_flight: usize,
    /// A classic member's new topic subscription waits for a metadata answer that covers it:
    /// a leader that joined without the partition counts would assign nothing and rebalance
    /// again as soon as they arrived.
    awaiting_metadata: bool,
}

impl GroupState {
    pub(super) fn is_member(&self) -> bool {
        self.member.is_some()
    }

    pub(super) fn poll_called(&mut self, now: Instant) {
        if let Some(m) = self.member.as_mut() {
            m.poll_called(now);
        }
    }
}

fn tp_key(tp: &TopicPartition) -> Tp {
    (tp.topic.to_string(), tp.partition)
}

fn tp_from(key: &Tp) -> TopicPartition {
    TopicPartition::new(key.0.as_str(), key.1)
}

pub(super) fn subscribe(inner: &Arc<Inner>, subscription: Subscription) -> Result<()> {
    let config = &inner.config;
    let Some(group) = config.group_id.clone() else {
        return Err(Error::config("group.id", "needed to subscribe"));
    };
    let mut assignors: Vec<Arc<dyn assignor::Assignor + Send + Sync>> = Vec::new();
    for name in &config.partition_assignment_strategy {
        let a = assignor::by_name(name)
            .ok_or_else(|| Error::config("partition.assignment.strategy", format!("unknown assignor {name:?}")))?;
        assignors.push(Arc::from(a));
    }
    let mut st = inner.lock();
    if !st.fetcher.is_empty() && st.group.member.is_none() {
        return Err(Error::config(
            "subscription",
            "the consumer has assigned partitions; subscribe or assign, not both",
        ));
    }
    let now = Instant::now();
    if st.group.member.is_none() {
        let member = if config.group_protocol == super::GroupProtocol::Consumer {
            let mut gc = ConsumerGroupConfig::new(group);
            gc.group_instance_id = config.group_instance_id.clone();
            gc.session_timeout = config.session_timeout;
            gc.rebalance_timeout = config.max_poll_interval;
            gc.heartbeat_interval = config.heartbeat_interval;
            gc.server_assignor = config.group_remote_assignor.clone();
            gc.retry_backoff = config.retry_backoff;
            gc.retry_backoff_max = config.retry_backoff_max;
            gc.rack = config.client_rack.clone();
            Box::new(ConsumerGroupMember::new(gc, now)) as Box<dyn Member + Send>
        } else {
            let mut gc = GroupConfig::new(group, assignors);
            gc.group_instance_id = config.group_instance_id.clone();
            gc.session_timeout = config.session_timeout;
            gc.rebalance_timeout = config.max_poll_interval;
            gc.heartbeat_interval = config.heartbeat_interval;
            gc.retry_backoff = config.retry_backoff;
            gc.retry_backoff_max = config.retry_backoff_max;
            gc.rack = config.client_rack.clone();
            Box::new(GroupMember::new(gc, now))
        };
        let (tx, rx) = mpsc::unbounded_channel();
        st.group.member = Some(member);
        st.group.responder = Some(tx);
        st.group.responses = Some(rx);
    }
    if let (Subscription::Topics(topics), Some(m)) = (&subscription, st.group.member.as_mut()) {
        if m.assigns_client_side() {
            st.group.awaiting_metadata = true;
        } else {
            m.subscribe(topics.clone(), now);
        }
    }
    st.group.subscription = Some(subscription);
    st.fetcher.want_metadata();
    drop(st);
    inner.wake.notify_one();
    Ok(())
}

/// The topics whose metadata the driver keeps: assigned ones, subscribed ones and, on a classic
/// leader, every topic of the group (it assigns them, and rejoins when their counts change).
pub(super) fn wanted_topics(inner: &Inner) -> Vec<Arc<str>> {
    let st = inner.lock();
    let mut topics: BTreeSet<Arc<str>> = st.fetcher.partitions().map(|tp| tp.topic.clone()).collect();
    if let Some(Subscription::Topics(ts)) = &st.group.subscription {
        topics.extend(ts.iter().map(|t| Arc::from(t.as_str())));
        if let Some(m) = &st.group.member {
            topics.extend(m.metadata_topics().iter().map(|t| Arc::from(t.as_str())));
        }
    }
    topics.into_iter().collect()
}

pub(super) fn is_pattern(inner: &Inner) -> bool {
    matches!(inner.lock().group.subscription, Some(Subscription::Pattern(_)))
}

/// Gives the member the partition counts of its topics (and, for a pattern, the topics that
/// match now).
pub(super) fn metadata_updated(inner: &Arc<Inner>, response: &MetadataResponse) {
    let mut st = inner.lock();
    let now = Instant::now();
    let group = &mut st.group;
    let Some(member) = group.member.as_mut() else { return };
    let mut first_answer = false;
    if let (true, Some(Subscription::Topics(topics))) = (group.awaiting_metadata, &group.subscription) {
        let answered: BTreeSet<&str> = response.topics.iter().filter_map(|t| t.name.as_deref()).collect();
        if topics.iter().all(|t| answered.contains(t.as_str())) {
            group.awaiting_metadata = false;
            first_answer = true;
            member.subscribe(topics.clone(), now);
        }
    }
    if let Some(Subscription::Pattern(re)) = &group.subscription {
        let matching: BTreeSet<String> = response
            .topics
            .iter()
            .filter(|t| t.error_code == ErrorCode::NONE && !t.is_internal)
            .filter_map(|t| t.name.as_deref().filter(|n| re.is_match(n)).map(str::to_owned))
            .collect();
        member.subscribe(matching, now);
    }
    let names = response
        .topics
        .iter()
        .filter(|t| t.error_code == ErrorCode::NONE)
        .filter_map(|t| Some((t.topic_id, t.name.as_deref()?.to_owned())))
        .collect();
    member.set_topic_names(names, now);
    let subscribed = member.metadata_topics();
    let counts: BTreeMap<String, i32> = response
        .topics
        .iter()
        .filter(|t| t.error_code == ErrorCode::NONE)
        .filter_map(|t| {
            t.name.as_deref().filter(|n| subscribed.contains(*n)).map(|n| (n.to_owned(), t.partitions.len() as i32))
        })
        .collect();
    if counts != group.counts || first_answer {
        group.counts = counts.clone();
        member.set_partition_counts(counts, now);
    }
}

/// One turn of the group's share of the driver loop: apply answers, send what the member wants
/// sent, turn its events into partition changes and application events.
pub(super) async fn step(inner: &Arc<Inner>, now: Instant) {
    let mut requests = Vec::new();
    // Whether the member's state may have moved: pollers and commit waiters are woken only
    // then (waking them on every step made an idle poll and the driver wake each other
    // without end).
    let mut moved = false;
    {
        let mut st = inner.lock();
        let st = &mut *st;
        let Some(member) = st.group.member.as_mut() else { return };
        if let Some(rx) = st.group.responses.as_mut() {
            while let Ok((id, response)) = rx.try_recv() {
                member.handle_response(id, response, now);
                moved = true;
            }
        }
        // Auto-commit of positions while the generation is current.
        if inner.config.enable_auto_commit
            && member.is_stable()
            && st.group.last_auto_commit.is_none_or(|t| now.duration_since(t) >= inner.config.auto_commit_interval)
        {
            st.group.last_auto_commit = Some(now);
            // A position awaiting validation after a leader change, or parked on a log
            // truncation, may point past what the log holds: `positions` leaves it out.
            let offsets: BTreeMap<Tp, (i64, Option<i32>)> = st
                .fetcher
                .positions()
                .into_iter()
                .filter(|(tp, _)| member.assignment().contains(&tp_key(tp)))
                .map(|(tp, position)| (tp_key(&tp), position))
                .collect();
            if !offsets.is_empty() {
                member.commit(offsets, now);
            }
        }
        while let Some(r) = member.poll_request(now) {
            requests.push(r);
        }
        let events: Vec<GroupEvent> = std::iter::from_fn(|| member.poll_event()).collect();
        moved |= !events.is_empty() || !requests.is_empty();
        for event in events {
            apply_event(st, event);
        }
    }
    let responder = inner.lock().group.responder.clone();
    let Some(responder) = responder else { return };
    for (id, target, request) in requests {
        let client = inner.client.clone();
        let responder = responder.clone();
        let inner = inner.clone();
        let leave = request.is_leave();
        if leave {
            inner.lock().group.leaves_in_flight += 1;
        }
        tokio::spawn(async move {
            let response = send(&client, target, request).await;
            if leave {
                inner.lock().group.leaves_in_flight -= 1;
            }
            let _ = responder.send((id, response));
            inner.wake.notify_one();
            inner.data.notify_waiters();
        });
    }
    if moved {
        inner.data.notify_waiters();
    }
}

fn apply_event(st: &mut super::consumer::State, event: GroupEvent) {
    match event {
        GroupEvent::Assigned(set) => {
            let tps: Vec<TopicPartition> = set.iter().map(tp_from).collect();
            for tp in &tps {
                st.fetcher.await_committed(tp.clone());
            }
            st.group.app_events.push_back(AppEvent::Assigned(tps));
        }
        GroupEvent::CommittedOffsets(offsets) => {
            for (key, (offset, epoch, _)) in offsets {
                st.fetcher.committed(&tp_from(&key), Some((offset, epoch)));
            }
        }
        GroupEvent::OffsetFetchFailed(failed) => {
            if let Some((key, code)) = failed.into_iter().next() {
                st.poll_error = Some(Error::broker(code, None, format!("committed offset of {}-{}", key.0, key.1)));
            }
        }
        GroupEvent::Revoke(set) => {
            st.group.app_events.push_back(AppEvent::Revoke(set.iter().map(tp_from).collect()));
        }
        GroupEvent::Lost(set) => {
            // The partitions stay (positions and all) until `poll` has told the application;
            // the member waits for that before it rejoins.
            st.group.app_events.push_back(AppEvent::Lost(set.iter().map(tp_from).collect()));
        }
        GroupEvent::CommitResult { id, result } => {
            if let Some(tx) = st.group.commits.remove(&id) {
                let _ = tx.send(result);
            }
        }
        GroupEvent::Fatal(code) => {
            let consumer_protocol = st.group.member.as_ref().is_some_and(|m| m.is_consumer_protocol());
            st.poll_error = Some(if consumer_protocol && code == ErrorCode::UNSUPPORTED_VERSION {
                // The broker offers no ConsumerGroupHeartbeat (or refuses it): the usual cause is
                // a cluster that predates the protocol or has it switched off.
                Error::config(
                    "group.protocol",
                    "the consumer group protocol (KIP-848, group.protocol=consumer) needs Kafka 4.0 or later, or a \
                     cluster with it enabled (group.coordinator.rebalance.protocols including consumer); this \
                     cluster does not offer it; group.protocol=classic works with it",
                )
            } else {
                Error::broker(code, None, "consumer group membership")
            });
        }
    }
}

async fn send(client: &super::Client, target: Target, request: GroupRequest) -> GroupResponse {
    let kind = request.kind();
    macro_rules! go {
        ($req:expr, $variant:ident) => {
            go!($req, $variant, i16::MAX)
        };
        ($req:expr, $variant:ident, $max:expr) => {{
            let result = match target.node() {
                None => client.send_any(&$req).await,
                Some(node) => {
                    if !client.brokers().iter().any(|b| b.node_id == node) {
                        let _ = client.metadata(Some(&[])).await;
                    }
                    client.send_control(node, &$req, $max).await
                }
            };
            match result {
                Ok(r) => GroupResponse::$variant(r),
                // A broker without ConsumerGroupHeartbeat: the member stops with a fatal error.
                Err(Error::UnsupportedVersion { .. }) if kind == RequestKind::CONSUMER_GROUP_HEARTBEAT => {
                    GroupResponse::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
                        error_code: ErrorCode::UNSUPPORTED_VERSION,
                        ..Default::default()
                    })
                }
                Err(e) => {
                    tracing::debug!(?kind, error = %e, "group request failed");
                    GroupResponse::Failed { kind }
                }
            }
        }};
    }
    match request {
        GroupRequest::FindCoordinator(r) => go!(r, FindCoordinator),
        GroupRequest::JoinGroup(r) => go!(r, JoinGroup),
        GroupRequest::SyncGroup(r) => go!(r, SyncGroup),
        GroupRequest::Heartbeat(r) => go!(r, Heartbeat),
        GroupRequest::LeaveGroup(r) => go!(r, LeaveGroup),
        GroupRequest::ConsumerGroupHeartbeat(r) => go!(r, ConsumerGroupHeartbeat),
        // v10 names topics by id; these requests carry names.
        GroupRequest::OffsetCommit(r) => go!(r, OffsetCommit, 9),
        GroupRequest::OffsetFetch(r) => go!(r, OffsetFetch, 9),
    }
}

pub(super) fn next_timeout(inner: &Inner) -> Option<Instant> {
    inner.lock().group.member.as_ref().and_then(|m| m.next_timeout())
}

/// Runs the rebalance steps the group queued for the application, in order.
///
/// Cancel-safe: a step leaves the queue only when it has been run to the end (callback,
/// commit, partitions dropped, the member told), so a dropped future leaves it to the next call,
/// which runs it again from the start. A listener callback may thus run more than once for one
/// step, never zero times.
pub(super) async fn run_events(consumer: &Consumer) -> Result<()> {
    let inner = consumer.inner().clone();
    let turn = inner.lock().group.app_turn.clone();
    let _turn = turn.lock().await;
    loop {
        let Some(event) = inner.lock().group.app_events.front().cloned() else { return Ok(()) };
        let listener = consumer.listener();
        let (step, partitions) = match &event {
            AppEvent::Assigned(tps) => ("assigned", tps.len()),
            AppEvent::Lost(tps) => ("lost", tps.len()),
            AppEvent::Revoke(tps) => ("revoked", tps.len()),
        };
        let group = inner.config.group_id.as_deref().unwrap_or_default();
        let span = tracing::info_span!("kafka.rebalance", group, step, partitions);
        async {
            match &event {
                AppEvent::Assigned(tps) => {
                    if let Some(l) = &listener {
                        l.on_partitions_assigned(consumer, tps).await;
                    }
                }
                AppEvent::Lost(tps) => {
                    if let Some(l) = &listener {
                        l.on_partitions_lost(consumer, tps).await;
                    }
                }
                AppEvent::Revoke(tps) => {
                    if let Some(l) = &listener {
                        l.on_partitions_revoked(consumer, tps).await;
                    }
                    if inner.config.enable_auto_commit {
                        let offsets: BTreeMap<TopicPartition, OffsetAndMetadata> =
                            consumer.positions().into_iter().filter(|(tp, _)| tps.contains(tp)).collect();
                        if let Err(e) = commit(&inner, offsets).await {
                            tracing::warn!(error = %e, "commit of revoked partitions failed");
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
        // Done: no await from here to the end of the step.
        let mut guard = inner.lock();
        let st = &mut *guard;
        st.group.app_events.pop_front();
        let now = Instant::now();
        match event {
            AppEvent::Assigned(_) => {}
            AppEvent::Revoke(tps) => {
                for tp in &tps {
                    st.drop_partition(tp);
                }
                if let Some(m) = st.group.member.as_mut() {
                    m.revocation_done(now);
                }
            }
            AppEvent::Lost(tps) => {
                for tp in &tps {
                    st.drop_partition(tp);
                }
                if let Some(m) = st.group.member.as_mut() {
                    m.lost_handled(now);
                }
            }
        }
        drop(guard);
        inner.wake.notify_one();
    }
}

/// Commits through the member, with its current generation, and waits for the answer.
pub(super) async fn commit(inner: &Arc<Inner>, offsets: BTreeMap<TopicPartition, OffsetAndMetadata>) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let rx = {
        let mut st = inner.lock();
        let Some(member) = st.group.member.as_mut() else {
            return Err(Error::config("group.id", "not a group member"));
        };
        let map = offsets.iter().map(|(tp, o)| (tp_key(tp), (o.offset, o.leader_epoch))).collect();
        let id = member.commit(map, Instant::now());
        let (tx, rx) = oneshot::channel();
        st.group.commits.insert(id, tx);
        // The member may have answered at once (no current generation).
        while let Some(event) = st.group.member.as_mut().and_then(|m| m.poll_event()) {
            apply_event(&mut st, event);
        }
        rx
    };
    inner.wake.notify_one();
    let timeout = inner.config.default_api_timeout;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(code))) => Err(Error::broker(code, None, "offset commit")),
        Ok(Err(_)) => Err(Error::Closed { broker: "consumer".into() }),
        Err(_) => Err(Error::Timeout { what: "offset commit".into(), after: timeout }),
    }
}

/// Leaves the group: revokes (committing with auto-commit), then LeaveGroup for a dynamic member.
pub(super) async fn leave(consumer: &Consumer) {
    let inner = consumer.inner().clone();
    {
        let mut st = inner.lock();
        let Some(m) = st.group.member.as_mut() else { return };
        m.leave(Instant::now());
    }
    inner.wake.notify_one();
    let deadline = tokio::time::Instant::now() + inner.config.default_api_timeout.min(Duration::from_secs(30));
    loop {
        if let Err(e) = run_events(consumer).await {
            tracing::warn!(error = %e, "rebalance callback failed while leaving");
        }
        // The leave request must also have reached the coordinator: `close` closes the
        // connections next, which would drop it unsent. (A static KIP-848 member whose -2
        // heartbeat is lost holds its instance id until the session timeout, and its
        // replacement is refused with UNRELEASED_INSTANCE_ID.)
        let left = {
            let st = inner.lock();
            st.group.member.as_ref().is_none_or(|m| m.has_left() || m.fatal_error().is_some())
                && st.group.leaves_in_flight == 0
        };
        if left || tokio::time::Instant::now() >= deadline {
            return;
        }
        let notified = inner.data.notified();
        inner.wake.notify_one();
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
}

/// The member's generation (KIP-848: member epoch) and member id, while it is in a group.
pub(super) fn generation(inner: &Inner) -> Option<(i32, String)> {
    inner.lock().group.member.as_ref().and_then(|m| m.generation())
}
