//! The consumer's group membership: subscriptions, the group member state machine, and the
//! rebalance callbacks run on the application's task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::consumer::{Consumer, Inner, OffsetAndMetadata};
use super::error::{Error, Result};
use crate::codec::messages::MetadataResponse;
use crate::proto::producer::TopicPartition;

/// What the application subscribed to.
pub(super) enum Subscription {
    Topics(BTreeSet<String>),
    Pattern(regex::Regex),
}

#[derive(Default)]
pub(super) struct GroupState {
    subscription: Option<Subscription>,
}

impl GroupState {
    pub(super) fn is_member(&self) -> bool {
        false
    }

    pub(super) fn poll_called(&mut self, _now: Instant) {}
}

pub(super) fn subscribe(inner: &Arc<Inner>, subscription: Subscription) -> Result<()> {
    let _ = (inner, subscription);
    Err(Error::config("group.id", "group membership is not wired in yet"))
}

pub(super) fn wanted_topics(inner: &Inner) -> Vec<Arc<str>> {
    let st = inner.lock();
    let mut topics: BTreeSet<Arc<str>> = st.partitions.keys().map(|tp| tp.topic.clone()).collect();
    if let Some(Subscription::Topics(ts)) = &st.group.subscription {
        topics.extend(ts.iter().map(|t| Arc::from(t.as_str())));
    }
    topics.into_iter().collect()
}

pub(super) fn is_pattern(inner: &Inner) -> bool {
    matches!(inner.lock().group.subscription, Some(Subscription::Pattern(_)))
}

pub(super) async fn step(_inner: &Arc<Inner>, _now: Instant) {}

pub(super) fn next_timeout(_inner: &Inner) -> Option<Instant> {
    None
}

pub(super) fn metadata_updated(_inner: &Arc<Inner>, _response: &MetadataResponse) {}

pub(super) async fn run_events(_consumer: &Consumer) -> Result<()> {
    Ok(())
}

pub(super) async fn commit(_inner: &Arc<Inner>, _offsets: BTreeMap<TopicPartition, OffsetAndMetadata>) -> Result<()> {
    Err(Error::config("group.id", "group membership is not wired in yet"))
}

pub(super) async fn leave(_inner: &Arc<Inner>) {}
