//! The admin client: topics, configs, consumer groups, offsets, transactions and the cluster,
//! each request sent to the broker that must answer it.
//!
//! | Operation | Sent to |
//! |---|---|
//! | CreateTopics, DeleteTopics, CreatePartitions | the controller of the last metadata (any broker forwards in KRaft) |
//! | DescribeConfigs, IncrementalAlterConfigs | the broker itself for broker resources, any broker otherwise |
//! | ListGroups, ListTransactions | every broker, results merged |
//! | DescribeGroups, ConsumerGroupDescribe, DeleteGroups, OffsetFetch, OffsetCommit, OffsetDelete | the group's coordinator |
//! | DescribeTransactions | the transactional id's coordinator |
//! | ListOffsets, DeleteRecords | each partition's leader |
//! | FindCoordinator, DescribeCluster, Metadata | any broker |
//!
//! Every request goes at the highest version both sides speak. Retriable conditions (a moved
//! controller, coordinator or leader, a coordinator still loading, a dropped connection) are
//! retried until [`Admin::timeout`] has passed, waiting between attempts with exponential
//! backoff and jitter (KIP-580: `retry.backoff.ms` doubled per attempt up to
//! `retry.backoff.max.ms`, from the client's [`ConnectionConfig`](super::ConnectionConfig));
//! other errors return at once. Coordinators come from the client's router, which caches them
//! (see [`Client`]'s router: a cached coordinator is dropped when it answers that it is not, or
//! cannot be reached). An error about one item of a batch (a topic, a group, a partition) is an
//! [`Error::Broker`] whose `context` names the item; the other items of that request have then
//! been processed by the broker.
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::client::Result<()> {
//! use kafka_wire::client::{Admin, ClientConfig, NewTopic};
//! let admin = Admin::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//! admin.create_topics(&[NewTopic::new("events", 3, 1).config("cleanup.policy", "compact")], false).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cluster::{BrokerAddr, Client, ClientConfig};
use super::connection::Connection;
use super::error::{Error, Result};
use super::router::{is_coordinator_error, Retry};
use crate::codec::messages::consumer_group_describe;
use crate::codec::messages::create_partitions::CreatePartitionsTopic;
use crate::codec::messages::create_topics::{CreatableTopic, CreatableTopicConfig};
use crate::codec::messages::delete_records::{DeleteRecordsPartition, DeleteRecordsTopic};
use crate::codec::messages::delete_topics::DeleteTopicState;
use crate::codec::messages::describe_configs::DescribeConfigsResource;
use crate::codec::messages::incremental_alter_configs::{AlterConfigsResource, AlterableConfig};
use crate::codec::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use crate::codec::messages::metadata::{MetadataRequestTopic, MetadataResponseTopic};
use crate::codec::messages::offset_commit::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use crate::codec::messages::offset_delete::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use crate::codec::messages::offset_fetch::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use crate::codec::messages::{
    ConsumerGroupDescribeRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeTransactionsRequest, IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest,
    ListTransactionsRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, Request, VersionRange,
};
use crate::codec::primitives::{get_array_len, get_i16, get_i32, get_string};
use crate::codec::{DecodeResult, ErrorCode, Uuid};

// ---------------------------------------------------------------------------------------------
// Public types

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name.
    pub name: String,
    /// `-1`: the broker's `num.partitions`.
    pub partitions: i32,
    /// `-1`: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with no configs: `-1` for `partitions` or `replication_factor` takes the broker's default.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        Self { name: name.into(), partitions, replication_factor, configs: Vec::new() }
    }

    /// Adds a topic config.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((name.into(), value.into()));
        self
    }
}

/// A topic as CreateTopics reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedTopic {
    /// The topic's name.
    pub name: String,
    /// Zero before CreateTopics v7, and with `validate_only`.
    pub topic_id: Uuid,
    /// `-1` if the broker did not say (CreateTopics before v5 with broker defaults).
    pub partitions: i32,
    /// `-1` if the broker did not say.
    pub replication_factor: i16,
}

/// The kind of a config resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigResourceType {
    /// A topic (wire value 2).
    Topic,
    /// A broker, or the cluster-wide broker defaults (4).
    Broker,
    /// A broker's log4j loggers (8).
    BrokerLogger,
    /// Client metrics subscriptions (16, KIP-714).
    ClientMetrics,
    /// A group's configs (32, KIP-848).
    Group,
}

impl ConfigResourceType {
    /// The wire value.
    pub const fn code(self) -> i8 {
        match self {
            Self::Topic => 2,
            Self::Broker => 4,
            Self::BrokerLogger => 8,
            Self::ClientMetrics => 16,
            Self::Group => 32,
        }
    }

    /// The type of a wire value; `None` for values this client does not know.
    pub const fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(Self::Topic),
            4 => Some(Self::Broker),
            8 => Some(Self::BrokerLogger),
            16 => Some(Self::ClientMetrics),
            32 => Some(Self::Group),
            _ => None,
        }
    }
}

/// A resource that has configs: a topic, a broker (by node id; `""` for the cluster-wide
/// default), a broker's loggers, a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigResource {
    /// The kind of resource.
    pub resource_type: ConfigResourceType,
    /// The topic or group name, the broker's node id, or `""` for the broker defaults.
    pub name: String,
}

impl ConfigResource {
    /// A topic's configs.
    pub fn topic(name: impl Into<String>) -> Self {
        Self { resource_type: ConfigResourceType::Topic, name: name.into() }
    }

    /// A broker's configs.
    pub fn broker(node_id: i32) -> Self {
        Self { resource_type: ConfigResourceType::Broker, name: node_id.to_string() }
    }

    /// The cluster-wide default broker configs (dynamic defaults).
    pub fn broker_default() -> Self {
        Self { resource_type: ConfigResourceType::Broker, name: String::new() }
    }

    /// A broker's logger levels.
    pub fn broker_logger(node_id: i32) -> Self {
        Self { resource_type: ConfigResourceType::BrokerLogger, name: node_id.to_string() }
    }

    /// A group's configs (KIP-848).
    pub fn group(name: impl Into<String>) -> Self {
        Self { resource_type: ConfigResourceType::Group, name: name.into() }
    }

    fn describe(&self) -> String {
        let kind = match self.resource_type {
            ConfigResourceType::Topic => "topic",
            ConfigResourceType::Broker => "broker",
            ConfigResourceType::BrokerLogger => "broker logger",
            ConfigResourceType::ClientMetrics => "client metrics",
            ConfigResourceType::Group => "group",
        };
        if self.name.is_empty() {
            format!("{kind} (default)")
        } else {
            format!("{kind} {}", self.name)
        }
    }

    /// The broker that must answer for this resource: the broker itself for broker resources
    /// with a node id, any broker otherwise.
    fn destination(&self) -> Result<Option<i32>> {
        match self.resource_type {
            ConfigResourceType::Broker | ConfigResourceType::BrokerLogger if !self.name.is_empty() => self
                .name
                .parse()
                .map(Some)
                .map_err(|_| Error::config("resource name", format!("{} is not a broker id", self.name))),
            _ => Ok(None),
        }
    }
}

/// Where a config value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigSource {
    /// A source this client does not know (wire value 0 or a newer one).
    Unknown,
    /// Set on the topic.
    TopicConfig,
    /// Set dynamically for this broker.
    DynamicBrokerConfig,
    /// Set dynamically for every broker.
    DynamicDefaultBrokerConfig,
    /// In the broker's properties file.
    StaticBrokerConfig,
    /// Kafka's default.
    DefaultConfig,
    /// A broker logger level set dynamically.
    DynamicBrokerLoggerConfig,
    /// A client metrics subscription (KIP-714).
    ClientMetricsConfig,
    /// Set on the group (KIP-848).
    GroupConfig,
}

impl ConfigSource {
    /// The source of a wire value.
    pub const fn from_code(code: i8) -> Self {
        match code {
            1 => Self::TopicConfig,
            2 => Self::DynamicBrokerConfig,
            3 => Self::DynamicDefaultBrokerConfig,
            4 => Self::StaticBrokerConfig,
            5 => Self::DefaultConfig,
            6 => Self::DynamicBrokerLoggerConfig,
            7 => Self::ClientMetricsConfig,
            8 => Self::GroupConfig,
            _ => Self::Unknown,
        }
    }
}

/// One config of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config's name.
    pub name: String,
    /// `None` for sensitive values and values that are not set.
    pub value: Option<String>,
    /// Whether it cannot be changed with AlterConfigs.
    pub read_only: bool,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether the value is sensitive (passwords); its value is then not returned.
    pub is_sensitive: bool,
    /// The values this one overrides or would fall back to, highest precedence first.
    pub synonyms: Vec<ConfigSynonym>,
    /// The wire config type (DescribeConfigs v3+; 0 unknown, 1 boolean, 2 string, 3 int,
    /// 4 short, 5 long, 6 double, 7 list, 8 class, 9 password).
    pub config_type: i8,
}

impl ConfigEntry {
    /// Whether the value is Kafka's default (neither the topic nor the broker sets it).
    pub fn is_default(&self) -> bool {
        self.source == ConfigSource::DefaultConfig
    }
}

/// A value a config falls back to, or overrides (DescribeConfigs `include_synonyms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSynonym {
    /// The synonym's config name (for a broker config, possibly another name of it).
    pub name: String,
    /// Its value; `None` if sensitive.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// The configs of one resource, as DescribeConfigs reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConfig {
    /// The resource.
    pub resource: ConfigResource,
    /// Its configs.
    pub entries: Vec<ConfigEntry>,
}

impl ResourceConfig {
    /// The entry of config `name`, if it is listed.
    pub fn get(&self, name: &str) -> Option<&ConfigEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The value of config `name`, if it is listed and not null.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|e| e.value.as_deref())
    }
}

/// What an [`AlterConfigOp`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlterConfigOpType {
    /// Sets the value.
    Set,
    /// Removes the value, so that it falls back to the broker's or Kafka's default.
    Delete,
    /// Adds an element to a list config.
    Append,
    /// Removes an element from a list config.
    Subtract,
}

impl AlterConfigOpType {
    /// The wire value.
    pub const fn code(self) -> i8 {
        match self {
            Self::Set => 0,
            Self::Delete => 1,
            Self::Append => 2,
            Self::Subtract => 3,
        }
    }
}

/// One change of [`Admin::incremental_alter_configs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterConfigOp {
    /// The config's name.
    pub name: String,
    /// What to do.
    pub op: AlterConfigOpType,
    /// The value; `None` for [`AlterConfigOpType::Delete`].
    pub value: Option<String>,
}

impl AlterConfigOp {
    /// Sets `name` to `value`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), op: AlterConfigOpType::Set, value: Some(value.into()) }
    }

    /// Removes `name`'s value, so that it falls back to the default.
    pub fn delete(name: impl Into<String>) -> Self {
        Self { name: name.into(), op: AlterConfigOpType::Delete, value: None }
    }

    /// Adds `value` to the list config `name`.
    pub fn append(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), op: AlterConfigOpType::Append, value: Some(value.into()) }
    }

    /// Removes `value` from the list config `name`.
    pub fn subtract(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), op: AlterConfigOpType::Subtract, value: Some(value.into()) }
    }
}

/// A group as ListGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's id.
    pub group_id: String,
    /// `"consumer"` for consumer groups, `""` for groups that only commit offsets.
    pub protocol_type: String,
    /// `Stable`, `Empty`, ... (ListGroups v4+).
    pub state: Option<String>,
    /// `classic`, `consumer`, `share`, ... (ListGroups v5+).
    pub group_type: Option<String>,
    /// The node that listed it: the group's coordinator.
    pub coordinator: i32,
}

/// A classic group as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`.
    pub state: String,
    /// `"consumer"` for consumer groups.
    pub protocol_type: String,
    /// The chosen protocol: the partition assignor for consumer groups (`range`, ...).
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
    /// The node id of the group's coordinator.
    pub coordinator: i32,
}

/// A member of a classic group as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `group.instance.id` (KIP-345 static membership), if any.
    pub group_instance_id: Option<String>,
    /// The member's `client.id`.
    pub client_id: String,
    /// The host the member connects from.
    pub client_host: String,
    /// The member's protocol metadata (for consumer groups: its subscription).
    pub metadata: Bytes,
    /// The member's assignment (for consumer groups: its partitions).
    pub assignment: Bytes,
}

impl MemberDescription {
    /// The partitions assigned to the member, for a group of protocol type `consumer`, per topic
    /// as the assignment lists them: `None` if the assignment is not a consumer protocol
    /// assignment. Each topic name is held once however many partitions it has, so the result
    /// takes about as much memory as the assignment's bytes.
    pub fn assigned_partitions(&self) -> Option<Vec<(String, Vec<i32>)>> {
        decode_consumer_assignment(self.assignment.clone()).ok()
    }

    /// The topics the member subscribes to, for a group of protocol type `consumer`.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        decode_consumer_subscription(self.metadata.clone()).ok()
    }
}

/// A committed offset of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the group will consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record (KIP-320), if committed.
    pub leader_epoch: Option<i32>,
    /// Metadata committed with the offset.
    pub metadata: Option<String>,
}

/// Which offset [`Admin::list_offsets`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (or, read committed, the last stable offset).
    Latest,
    /// The first offset whose record timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
    /// The offset and timestamp of the record with the highest timestamp (ListOffsets v7+).
    MaxTimestamp,
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Timestamp(ms) => ms,
            Self::MaxTimestamp => -3,
        }
    }

    fn min_version(self) -> i16 {
        match self {
            Self::MaxTimestamp => 7,
            _ => 0,
        }
    }
}

/// A partition's offset as ListOffsets reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// `-1` if no record matches ([`OffsetSpec::Timestamp`] after the last record's
    /// timestamp, [`OffsetSpec::MaxTimestamp`] of an empty partition).
    pub offset: i64,
    /// The record's timestamp, for timestamp lookups.
    pub timestamp: Option<i64>,
    /// The leader epoch of the record (ListOffsets v4+), if known.
    pub leader_epoch: Option<i32>,
}

/// A partition's new log start offset after [`Admin::delete_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedRecords {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The partition's new log start offset.
    pub low_watermark: i64,
}

/// The cluster as DescribeCluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// In KRaft mode, a broker id that requests for the controller can be sent to (brokers
    /// forward them), not the id of the quorum's controller.
    pub controller_id: Option<i32>,
    /// Unfenced brokers.
    pub brokers: Vec<BrokerAddr>,
}

/// What a coordinator coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordinatorType {
    /// A consumer group (key: the group id).
    Group,
    /// A transactional producer (key: the `transactional.id`).
    Transaction,
}

impl CoordinatorType {
    /// The wire value (FindCoordinator `key_type`).
    pub const fn code(self) -> i8 {
        match self {
            Self::Group => 0,
            Self::Transaction => 1,
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Transaction => "transactional id",
        }
    }
}

/// A topic as the cluster metadata describes it ([`Admin::describe_topics`],
/// [`Admin::list_topics`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// The topic id (zero from brokers older than Metadata v10).
    pub id: Uuid,
    /// Whether the topic is internal (`__consumer_offsets`, `__transaction_state`).
    pub internal: bool,
    /// The partitions, by partition id.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The largest replica count of its partitions.
    pub fn replication_factor(&self) -> usize {
        self.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0)
    }
}

/// A partition as the cluster metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition id.
    pub partition: i32,
    /// The leader's node id; `None` while the partition has no leader.
    pub leader: Option<i32>,
    /// The leader epoch (Metadata v7+).
    pub leader_epoch: Option<i32>,
    /// The node ids of the replicas, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The node ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// The node ids of the replicas that are offline (Metadata v5+).
    pub offline: Vec<i32>,
}

/// Partitions of one topic, the topic named once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The topic.
    pub topic: String,
    /// The partition ids.
    pub partitions: Vec<i32>,
}

/// A group of the consumer protocol of KIP-848 as ConsumerGroupDescribe reports it
/// ([`Admin::describe_consumer_groups`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `Assigning`, `Reconciling`, `Stable`, `Dead`.
    pub state: String,
    /// The epoch of the group: it grows with each change of its members or subscriptions.
    pub group_epoch: i32,
    /// The group epoch of the target assignment.
    pub assignment_epoch: i32,
    /// The server-side assignor (`uniform`, `range`, ...).
    pub assignor: String,
    /// The members.
    pub members: Vec<ConsumerGroupMember>,
    /// The node id of the group's coordinator.
    pub coordinator: i32,
}

/// A member of a KIP-848 consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMember {
    /// The member id.
    pub member_id: String,
    /// The static membership id (`group.instance.id`).
    pub instance_id: Option<String>,
    /// The member's `client.rack`, if set.
    pub rack_id: Option<String>,
    /// The member's epoch: the group epoch whose assignment it has reconciled.
    pub member_epoch: i32,
    /// The member's `client.id`.
    pub client_id: String,
    /// The host the member connects from.
    pub client_host: String,
    /// The topics it subscribes to by name.
    pub subscribed_topics: Vec<String>,
    /// The subscription's regular expression, for a pattern subscription.
    pub subscribed_topic_regex: Option<String>,
    /// The partitions the member owns now, per topic.
    pub assignment: Vec<TopicPartitions>,
    /// The partitions the coordinator wants it to own, per topic (differs from `assignment`
    /// while the member reconciles).
    pub target_assignment: Vec<TopicPartitions>,
}

/// Which transactions [`Admin::list_transactions`] lists; the default lists all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    /// Only transactions in one of these states (`Empty`, `Ongoing`, `PrepareCommit`,
    /// `PrepareAbort`, `CompleteCommit`, `CompleteAbort`, `Dead`, `PrepareEpochFence`); all if
    /// empty.
    pub states: Vec<String>,
    /// Only transactions of one of these producer ids; all if empty.
    pub producer_ids: Vec<i64>,
    /// Only transactions running for longer than this (ListTransactions v1+, KIP-994).
    pub min_duration: Option<Duration>,
}

/// A transaction as ListTransactions reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionListing {
    /// The `transactional.id`.
    pub transactional_id: String,
    /// The current producer id.
    pub producer_id: i64,
    /// `Empty`, `Ongoing`, `PrepareCommit`, `CompleteCommit`, ...
    pub state: String,
    /// The node id of the transaction coordinator that listed it.
    pub coordinator: i32,
}

/// A transaction as DescribeTransactions reports it ([`Admin::describe_transactions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionDescription {
    /// The `transactional.id`.
    pub transactional_id: String,
    /// `Empty`, `Ongoing`, `PrepareCommit`, `CompleteCommit`, ...
    pub state: String,
    /// The current producer id.
    pub producer_id: i64,
    /// The current producer epoch.
    pub producer_epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub timeout: Duration,
    /// When the open transaction (or, in a complete state, the last one) started, in ms since
    /// the epoch; `None` if none has started.
    pub start_time_ms: Option<i64>,
    /// The partitions in the open transaction, per topic.
    pub partitions: Vec<TopicPartitions>,
    /// The node id of the transaction coordinator.
    pub coordinator: i32,
}

// ---------------------------------------------------------------------------------------------
// The admin client

/// Administrative operations on a Kafka cluster. Cheap to clone; clones share the connections.
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
    timeout: Duration,
    wait_for_metadata: bool,
}

/// A (topic, partition) pair.
type Tp = (String, i32);

impl Admin {
    /// The default of [`Admin::with_timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// An admin client on an existing client's connections.
    pub fn new(client: Client) -> Self {
        Self { client, timeout: Self::DEFAULT_TIMEOUT, wait_for_metadata: true }
    }

    /// Connects to the cluster. Cancel-safe: a dropped future creates no client.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        Ok(Self::new(Client::connect(config).await?))
    }

    /// How long an operation may take in all, retries and waits included; also sent to the
    /// broker as the timeout of topic operations.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether topic creation, deletion and partition creation wait until the metadata shows
    /// their effect (every partition with a leader; the topic gone). On by default.
    pub fn with_wait_for_metadata(mut self, wait: bool) -> Self {
        self.wait_for_metadata = wait;
        self
    }

    /// The timeout of operations ([`Admin::with_timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Closes every connection of the underlying client. Cancel-safe: the connections are
    /// closed before the first await.
    pub async fn close(&self) {
        self.client.close().await;
    }

    // -- Topics ---------------------------------------------------------------------------------

    /// Creates topics (CreateTopics to the controller). With `validate_only` the broker only
    /// checks the request. Unless disabled with [`Admin::with_wait_for_metadata`], waits until
    /// every partition of the new topics has a leader in the metadata of every broker that
    /// answers, and so does a topic answered `TOPIC_ALREADY_EXISTS` (it may have just been
    /// created by another caller: the wait is then bounded by the admin timeout, and its
    /// outcome changes nothing in the result).
    ///
    /// A topic that cannot be created is an [`Error::Broker`] (`TOPIC_ALREADY_EXISTS`,
    /// `INVALID_CONFIG`, `INVALID_REPLICATION_FACTOR`, ...) naming it; the first such topic in
    /// `topics`' order is reported, the others have been created.
    /// [`Admin::create_topics_each`] reports every topic's outcome.
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the topics created or not.
    pub async fn create_topics(&self, topics: &[NewTopic], validate_only: bool) -> Result<Vec<CreatedTopic>> {
        self.create_topics_each(topics, validate_only).await?.into_iter().map(|(_, r)| r).collect()
    }

    /// As [`Admin::create_topics`], with one result per topic (in `topics`' order, duplicates
    /// once): the error is per topic, and the call fails as a whole only if the controller could
    /// not be asked (or answered without a topic, or its leaders did not appear in time).
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the topics created or not.
    pub async fn create_topics_each(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<CreatedTopic>)>> {
        let mut results: HashMap<&str, Result<CreatedTopic>> = HashMap::new();
        let mut pending: Vec<&NewTopic> = dedup_by(topics.iter(), |t| t.name.as_str());
        let mut retries = Retry::new(&self.client, self.timeout);
        while !pending.is_empty() {
            let request = CreateTopicsRequest {
                topics: pending
                    .iter()
                    .map(|t| CreatableTopic {
                        name: t.name.as_str().into(),
                        num_partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        configs: t
                            .configs
                            .iter()
                            .map(|(k, v)| CreatableTopicConfig {
                                name: k.as_str().into(),
                                value: Some(v.as_str().into()),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                timeout_ms: self.server_timeout_ms(),
                validate_only,
                ..Default::default()
            };
            let (retry, last) = match self.send_to_controller(&request).await {
                Err(e) if is_transport(&e) => (pending, Some(e)),
                Err(e) => return Err(e),
                Ok((addr, response)) => {
                    let mut retry = Vec::new();
                    let mut last = None;
                    for t in pending {
                        let Some(r) = response.topics.iter().find(|r| *r.name == t.name) else {
                            return Err(missing_result(&addr, "CreateTopics", &t.name));
                        };
                        let context = format!("create topic {}", t.name);
                        if r.error_code == ErrorCode::NOT_CONTROLLER {
                            last = Some(broker_error(r.error_code, r.error_message.as_deref(), context));
                            retry.push(t);
                            continue;
                        }
                        let result = check(r.error_code, r.error_message.as_deref(), context).map(|()| CreatedTopic {
                            name: t.name.clone(),
                            topic_id: r.topic_id,
                            partitions: if r.num_partitions >= 0 { r.num_partitions } else { t.partitions },
                            replication_factor: if r.replication_factor >= 0 {
                                r.replication_factor
                            } else {
                                t.replication_factor
                            },
                        });
                        results.insert(t.name.as_str(), result);
                    }
                    (retry, last)
                }
            };
            pending = retry;
            if !pending.is_empty() {
                self.refresh_metadata().await;
                if !retries.wait(None).await {
                    return Err(last.unwrap_or_else(|| self.timed_out("CreateTopics")));
                }
            }
        }
        let mut outcomes: Vec<(String, Result<CreatedTopic>)> = dedup_by(topics.iter(), |t| t.name.as_str())
            .into_iter()
            .map(|t| {
                let result = results.remove(t.name.as_str()).unwrap_or_else(|| Err(self.timed_out("CreateTopics")));
                (t.name.clone(), result)
            })
            .collect();
        if self.wait_for_metadata && !validate_only {
            let expected: Vec<(&str, i32)> =
                outcomes.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|t| (t.name.as_str(), t.partitions)).collect();
            if !expected.is_empty() {
                let counts = self.wait_for_leaders(&expected).await?;
                for t in outcomes.iter_mut().filter_map(|(_, r)| r.as_mut().ok()) {
                    if let Some(n) = counts.get(&t.name) {
                        t.partitions = *n;
                    }
                }
            }
            // A topic that already exists may have been created a moment ago by another caller
            // starting at the same time, and a caller that finds its topic existing goes on to
            // use it: it is waited for as well, so that no broker answers
            // UNKNOWN_TOPIC_OR_PARTITION for it right after. Its error is reported all the
            // same, and a wait that fails (a topic being deleted) fails nothing.
            let existing: Vec<(&str, i32)> = outcomes
                .iter()
                .filter(|(_, r)| matches!(r, Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS)))
                .map(|(name, _)| (name.as_str(), 0))
                .collect();
            if !existing.is_empty() {
                if let Err(e) = self.wait_for_leaders(&existing).await {
                    tracing::debug!(error = %e, "an existing topic did not show on every broker");
                }
            }
        }
        Ok(outcomes)
    }

    /// Deletes topics (DeleteTopics to the controller) and, unless disabled with
    /// [`Admin::with_wait_for_metadata`], waits until the metadata no longer lists them. A
    /// topic that does not exist is an `UNKNOWN_TOPIC_OR_PARTITION` error naming it (the first
    /// such topic is reported; [`Admin::delete_topics_each`] reports every topic's outcome).
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the topics deleted or not.
    pub async fn delete_topics(&self, topics: &[impl AsRef<str>]) -> Result<()> {
        self.delete_topics_each(topics).await?.into_iter().try_for_each(|(_, r)| r)
    }

    /// As [`Admin::delete_topics`], with one result per topic (in `topics`' order, duplicates
    /// once): the call fails as a whole only if the controller could not be asked (or answered
    /// without a topic, or the deleted topics stayed listed too long).
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the topics deleted or not.
    pub async fn delete_topics_each(&self, topics: &[impl AsRef<str>]) -> Result<Vec<(String, Result<()>)>> {
        let names: Vec<&str> = dedup_by(topics.iter().map(AsRef::as_ref), |t| *t);
        let mut results: HashMap<&str, Result<()>> = HashMap::new();
        let mut pending = names.clone();
        let mut retries = Retry::new(&self.client, self.timeout);
        while !pending.is_empty() {
            let request = DeleteTopicsRequest {
                topics: pending
                    .iter()
                    .map(|t| DeleteTopicState { name: Some((*t).into()), ..Default::default() })
                    .collect(),
                topic_names: pending.iter().map(|t| (*t).into()).collect(),
                timeout_ms: self.server_timeout_ms(),
                ..Default::default()
            };
            let (retry, last) = match self.send_to_controller(&request).await {
                Err(e) if is_transport(&e) => (pending, Some(e)),
                Err(e) => return Err(e),
                Ok((addr, response)) => {
                    let mut retry = Vec::new();
                    let mut last = None;
                    for t in pending {
                        let Some(r) = response.responses.iter().find(|r| r.name.as_deref() == Some(t)) else {
                            return Err(missing_result(&addr, "DeleteTopics", t));
                        };
                        let context = format!("delete topic {t}");
                        if r.error_code == ErrorCode::NOT_CONTROLLER {
                            last = Some(broker_error(r.error_code, r.error_message.as_deref(), context));
                            retry.push(t);
                            continue;
                        }
                        results.insert(t, check(r.error_code, r.error_message.as_deref(), context));
                    }
                    (retry, last)
                }
            };
            pending = retry;
            if !pending.is_empty() {
                self.refresh_metadata().await;
                if !retries.wait(None).await {
                    return Err(last.unwrap_or_else(|| self.timed_out("DeleteTopics")));
                }
            }
        }
        let outcomes: Vec<(String, Result<()>)> = names
            .iter()
            .map(|t| ((*t).to_owned(), results.remove(t).unwrap_or_else(|| Err(self.timed_out("DeleteTopics")))))
            .collect();
        let deleted: Vec<&str> = outcomes.iter().filter(|(_, r)| r.is_ok()).map(|(t, _)| t.as_str()).collect();
        if self.wait_for_metadata && !deleted.is_empty() {
            self.wait_for_absence(&deleted).await?;
        }
        Ok(outcomes)
    }

    /// Grows `topic` to `new_total` partitions (CreatePartitions to the controller) and, unless
    /// disabled with [`Admin::with_wait_for_metadata`], waits until each has a leader.
    /// Shrinking is an `INVALID_PARTITIONS` error.
    ///
    /// Not cancel-safe: dropped after the request went out, the partitions may be created
    /// without the caller knowing.
    pub async fn create_partitions(&self, topic: &str, new_total: i32) -> Result<()> {
        let request = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic { name: topic.into(), count: new_total, ..Default::default() }],
            timeout_ms: self.server_timeout_ms(),
            validate_only: false,
            ..Default::default()
        };
        let context = format!("create partitions of topic {topic}");
        self.retry(
            || async {
                let (addr, response) = self.send_to_controller(&request).await?;
                let r = response
                    .results
                    .iter()
                    .find(|r| &*r.name == topic)
                    .ok_or_else(|| missing_result(&addr, "CreatePartitions", topic))?;
                let result = check(r.error_code, r.error_message.as_deref(), context.clone());
                if r.error_code == ErrorCode::NOT_CONTROLLER {
                    self.refresh_metadata().await;
                }
                result
            },
            |e| is_transport(e) || e.code() == Some(ErrorCode::NOT_CONTROLLER),
        )
        .await?;
        if self.wait_for_metadata {
            self.wait_for_leaders(&[(topic, new_total)]).await?;
        }
        Ok(())
    }

    // -- Configs --------------------------------------------------------------------------------

    /// Describes the configs of `resources` (DescribeConfigs with synonyms: to the broker for
    /// broker resources, to any broker otherwise), in the order given. The first failing
    /// resource is reported; [`Admin::describe_configs_each`] reports each.
    ///
    /// Cancel-safe: it only reads.
    pub async fn describe_configs(&self, resources: &[ConfigResource]) -> Result<Vec<ResourceConfig>> {
        let found: HashMap<ConfigResource, Result<ResourceConfig>> =
            self.describe_configs_each(resources).await.into_iter().collect();
        resources.iter().filter_map(|r| found.get(r).cloned()).collect()
    }

    /// As [`Admin::describe_configs`], with one result per resource (in the order given,
    /// duplicates once): a resource that does not exist, a broker that cannot be reached or a
    /// broker id that is not a number is an error of those resources alone.
    ///
    /// Cancel-safe: it only reads.
    pub async fn describe_configs_each(
        &self,
        resources: &[ConfigResource],
    ) -> Vec<(ConfigResource, Result<ResourceConfig>)> {
        let unique = dedup_by(resources.iter(), |r| *r);
        let mut found: HashMap<&ConfigResource, Result<ResourceConfig>> = HashMap::new();
        let mut by_destination: BTreeMap<Option<i32>, Vec<&ConfigResource>> = BTreeMap::new();
        for r in &unique {
            match r.destination() {
                Ok(d) => by_destination.entry(d).or_default().push(r),
                Err(e) => {
                    found.insert(r, Err(e));
                }
            }
        }
        for (destination, group) in by_destination {
            let request = DescribeConfigsRequest {
                resources: group
                    .iter()
                    .map(|r| DescribeConfigsResource {
                        resource_type: r.resource_type.code(),
                        resource_name: r.name.as_str().into(),
                        configuration_keys: None,
                        ..Default::default()
                    })
                    .collect(),
                include_synonyms: true,
                include_documentation: false,
                ..Default::default()
            };
            let (addr, response) = match self.retry(|| self.send_to(destination, &request), is_retriable_read).await {
                Ok(answer) => answer,
                Err(e) => {
                    for r in group {
                        found.insert(r, Err(e.clone()));
                    }
                    continue;
                }
            };
            for r in group {
                let result = response
                    .results
                    .iter()
                    .find(|x| x.resource_type == r.resource_type.code() && *x.resource_name == r.name)
                    .ok_or_else(|| missing_result(&addr, "DescribeConfigs", &r.describe()))
                    .and_then(|result| {
                        check(
                            result.error_code,
                            result.error_message.as_deref(),
                            format!("describe configs of {}", r.describe()),
                        )?;
                        Ok(ResourceConfig { resource: r.clone(), entries: config_entries(result) })
                    });
                found.insert(r, result);
            }
        }
        unique
            .into_iter()
            .map(|r| {
                let result = found.remove(r).unwrap_or_else(|| Err(self.timed_out("DescribeConfigs")));
                (r.clone(), result)
            })
            .collect()
    }

    /// Changes configs of `resource` (IncrementalAlterConfigs: to the broker for broker
    /// resources, to any broker otherwise). A value the broker refuses is an `INVALID_CONFIG`
    /// error naming the resource.
    ///
    /// Not cancel-safe: dropped after the request went out, the change may be applied without
    /// the caller knowing.
    pub async fn incremental_alter_configs(&self, resource: &ConfigResource, ops: &[AlterConfigOp]) -> Result<()> {
        let destination = resource.destination()?;
        let request = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: resource.resource_type.code(),
                resource_name: resource.name.as_str().into(),
                configs: ops
                    .iter()
                    .map(|o| AlterableConfig {
                        name: o.name.as_str().into(),
                        config_operation: o.op.code(),
                        value: o.value.as_deref().map(Into::into),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            validate_only: false,
            ..Default::default()
        };
        let (addr, response) = self.retry(|| self.send_to(destination, &request), is_transport).await?;
        let r = response
            .responses
            .iter()
            .find(|x| x.resource_type == resource.resource_type.code() && *x.resource_name == resource.name)
            .ok_or_else(|| missing_result(&addr, "IncrementalAlterConfigs", &resource.describe()))?;
        check(r.error_code, r.error_message.as_deref(), format!("alter configs of {}", resource.describe()))
    }

    // -- Topic metadata -------------------------------------------------------------------------

    /// Every topic of the cluster, internal ones included, sorted by name (Metadata for all
    /// topics, to any broker).
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>> {
        let md = self.retry(|| self.client.metadata(None), is_retriable_read).await?;
        let mut topics: Vec<TopicMetadata> = md
            .topics
            .iter()
            .filter(|t| t.error_code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
            .filter_map(|t| t.name.as_deref().map(|name| topic_metadata(name, t)))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The partitions, leaders and replicas of `topics` (Metadata to any broker), in the order
    /// given. A topic that does not exist is an `UNKNOWN_TOPIC_OR_PARTITION` error naming it; a
    /// topic just created may be `LEADER_NOT_AVAILABLE` for a moment, or unknown to the broker
    /// asked (on a cluster, brokers learn of a topic one after the other).
    ///
    /// The first failing topic is reported; [`Admin::describe_topics_each`] reports each.
    /// Cancel-safe: it only reads.
    pub async fn describe_topics(&self, topics: &[impl AsRef<str>]) -> Result<Vec<TopicMetadata>> {
        self.describe_topics_each(topics).await?.into_iter().map(|(_, r)| r).collect()
    }

    /// As [`Admin::describe_topics`], with one result per topic (in the order given, duplicates
    /// once); fails as a whole only if no broker answers.
    /// Cancel-safe: it only reads.
    pub async fn describe_topics_each(
        &self,
        topics: &[impl AsRef<str>],
    ) -> Result<Vec<(String, Result<TopicMetadata>)>> {
        let names = dedup_by(topics.iter().map(|t| t.as_ref().to_owned()), |t| t.clone());
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let md = self.retry(|| self.client.metadata(Some(&refs)), is_retriable_read).await?;
        Ok(names
            .into_iter()
            .map(|name| {
                let result = find_topic(&md, &name).and_then(|t| {
                    check(t.error_code, None, format!("topic {name}")).map(|()| topic_metadata(&name, t))
                });
                (name, result)
            })
            .collect())
    }

    // -- Groups ---------------------------------------------------------------------------------

    /// Every group of the cluster: ListGroups to every broker, merged. Cancel-safe: it only
    /// reads.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.list_groups_filtered(&[], &[]).await
    }

    /// The groups in one of `states` (`Empty`, `Stable`, ...; ListGroups v4+) and of one of
    /// `types` (`classic`, `consumer`, ...; v5+); an empty filter matches everything.
    /// Cancel-safe: it only reads.
    pub async fn list_groups_filtered(&self, states: &[&str], types: &[&str]) -> Result<Vec<GroupListing>> {
        self.client.metadata(Some(&[])).await?;
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        for broker in self.client.brokers() {
            let listed = self
                .retry(
                    || self.list_groups_on(broker.node_id, states, types),
                    |e| is_transport(e) || e.code().is_some_and(is_coordinator_error),
                )
                .await?;
            for g in listed {
                groups.entry(g.group_id.clone()).or_insert(g);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Describes classic groups (DescribeGroups to each group's coordinator), in the order
    /// given. A group that does not exist is a `GROUP_ID_NOT_FOUND` error naming it (older
    /// brokers report such groups as `Dead`, which is turned into the same error).
    ///
    /// The first failing group is reported; [`Admin::describe_groups_each`] reports each.
    /// Cancel-safe: it only reads.
    pub async fn describe_groups(&self, groups: &[impl AsRef<str>]) -> Result<Vec<GroupDescription>> {
        self.describe_groups_each(groups).await?.into_iter().map(|(_, r)| r).collect()
    }

    /// As [`Admin::describe_groups`], with one result per group (in the order given,
    /// duplicates once); fails as a whole only if the coordinators cannot be found or asked.
    /// Cancel-safe: it only reads.
    pub async fn describe_groups_each(
        &self,
        groups: &[impl AsRef<str>],
    ) -> Result<Vec<(String, Result<GroupDescription>)>> {
        let ids = dedup_by(groups.iter().map(|g| g.as_ref().to_owned()), |g| g.clone());
        let mut found = self
            .by_coordinator_each(CoordinatorType::Group, ids.clone(), |node, gs| self.describe_groups_on(node, gs))
            .await?;
        Ok(ids
            .into_iter()
            .map(|g| {
                let result = found.remove(&g).unwrap_or_else(|| Err(self.timed_out("DescribeGroups")));
                (g, result)
            })
            .collect())
    }

    /// Describes groups of the consumer protocol of KIP-848 (ConsumerGroupDescribe to each
    /// group's coordinator, Kafka 4.0+), in the order given: state, epochs, server-side
    /// assignor, and each member with the partitions it owns and is to own. A group that does
    /// not exist, or is not a KIP-848 consumer group (a classic group: see
    /// [`Admin::describe_groups`]), is a `GROUP_ID_NOT_FOUND` error naming it.
    ///
    /// The first failing group is reported. Cancel-safe: it only reads.
    pub async fn describe_consumer_groups(&self, groups: &[impl AsRef<str>]) -> Result<Vec<ConsumerGroupDescription>> {
        let ids = dedup_by(groups.iter().map(|g| g.as_ref().to_owned()), |g| g.clone());
        let mut found = self
            .by_coordinator(CoordinatorType::Group, ids.clone(), |node, gs| self.consumer_group_describe_on(node, gs))
            .await?;
        ids.iter().map(|g| found.remove(g).ok_or_else(|| self.timed_out("ConsumerGroupDescribe"))).collect()
    }

    /// Deletes groups (DeleteGroups to each group's coordinator) with their committed offsets.
    /// Only empty groups can be deleted (`NON_EMPTY_GROUP`); a group that does not exist is a
    /// `GROUP_ID_NOT_FOUND` error. The first failing group is reported;
    /// [`Admin::delete_groups_each`] reports each.
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the groups deleted or not.
    pub async fn delete_groups(&self, groups: &[impl AsRef<str>]) -> Result<()> {
        self.delete_groups_each(groups).await?.into_iter().try_for_each(|(_, r)| r)
    }

    /// As [`Admin::delete_groups`], with one result per group (in the order given, duplicates
    /// once); fails as a whole only if the coordinators cannot be found or asked.
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the groups deleted or not.
    pub async fn delete_groups_each(&self, groups: &[impl AsRef<str>]) -> Result<Vec<(String, Result<()>)>> {
        let ids = dedup_by(groups.iter().map(|g| g.as_ref().to_owned()), |g| g.clone());
        let mut found = self
            .by_coordinator_each(CoordinatorType::Group, ids.clone(), |node, gs| self.delete_groups_on(node, gs))
            .await?;
        Ok(ids
            .into_iter()
            .map(|g| {
                let result = found.remove(&g).unwrap_or_else(|| Err(self.timed_out("DeleteGroups")));
                (g, result)
            })
            .collect())
    }

    /// The offsets `group` has committed (OffsetFetch to its coordinator), for every partition
    /// of `topics`, or for every partition it has committed for if `None`; partitions without
    /// a committed offset are left out. Sorted by topic and partition.
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_group_offsets(&self, group: &str, topics: Option<&[&str]>) -> Result<Vec<GroupOffset>> {
        let wanted = match topics {
            Some(ts) => Some(self.topic_partitions(ts).await?),
            None => None,
        };
        let mut found = self
            .by_coordinator(CoordinatorType::Group, vec![group.to_owned()], |node, _| {
                self.offset_fetch_on(node, group, wanted.as_deref())
            })
            .await?;
        let mut offsets = found.remove(group).unwrap_or_default();
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(offsets)
    }

    /// Sets committed offsets of `group` (OffsetCommit with no generation or member, to its
    /// coordinator). The group must have no active members (else `UNKNOWN_MEMBER_ID`).
    ///
    /// Not cancel-safe: dropped, the commit may have been sent and the offsets set or not.
    pub async fn alter_group_offsets<T: AsRef<str>>(&self, group: &str, offsets: &[(T, i32, i64)]) -> Result<()> {
        let offsets: Vec<(String, i32, i64)> =
            offsets.iter().map(|(t, p, o)| (t.as_ref().to_owned(), *p, *o)).collect();
        self.by_coordinator(CoordinatorType::Group, vec![group.to_owned()], |node, _| {
            self.offset_commit_on(node, group, &offsets)
        })
        .await?;
        Ok(())
    }

    /// Removes committed offsets of `group` (OffsetDelete to its coordinator). The group must
    /// not be subscribed to the topics (`GROUP_SUBSCRIBED_TO_TOPIC`).
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the offsets removed or not.
    pub async fn delete_group_offsets<T: AsRef<str>>(&self, group: &str, partitions: &[(T, i32)]) -> Result<()> {
        let tps: Vec<Tp> = partitions.iter().map(|(t, p)| (t.as_ref().to_owned(), *p)).collect();
        self.by_coordinator(CoordinatorType::Group, vec![group.to_owned()], |node, _| {
            self.offset_delete_on(node, group, &tps)
        })
        .await?;
        Ok(())
    }

    /// The node id of the coordinator of `key` (FindCoordinator to any broker, even if the
    /// client's router has it cached), retrying while the coordinator is not available or
    /// still loading.
    ///
    /// Cancel-safe: it only reads.
    pub async fn find_coordinator(&self, key: &str, key_type: CoordinatorType) -> Result<i32> {
        let mut found = self.find_coordinators(&[key], key_type).await?;
        found.remove(key).ok_or_else(|| self.timed_out("FindCoordinator"))
    }

    /// The coordinators of several keys at once (one request from FindCoordinator v4 on), asked
    /// of a broker even if the client's router has them cached (and cached for its later
    /// requests), retrying while a coordinator is not available or still loading.
    ///
    /// Cancel-safe: it only reads.
    pub async fn find_coordinators(
        &self,
        keys: &[impl AsRef<str>],
        key_type: CoordinatorType,
    ) -> Result<HashMap<String, i32>> {
        let mut pending = dedup_by(keys.iter().map(|k| k.as_ref().to_owned()), |k| k.clone());
        let mut found = HashMap::new();
        let mut retries = Retry::new(&self.client, self.timeout);
        while !pending.is_empty() {
            let (again, last) = match self.client.lookup_coordinators(key_type, &pending).await {
                Err(e) if is_transport(&e) => (pending, Some(e)),
                Err(e) => return Err(e),
                Ok(results) => {
                    let mut again = Vec::new();
                    let mut last = None;
                    for (key, result) in results {
                        match result {
                            Ok(node) => {
                                found.insert(key, node);
                            }
                            Err(e) if e.code().is_some_and(is_coordinator_error) => {
                                again.push(key);
                                last = Some(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    // Keys the broker did not answer for are asked again.
                    let unanswered: Vec<String> =
                        pending.into_iter().filter(|k| !found.contains_key(k) && !again.contains(k)).collect();
                    again.extend(unanswered);
                    (again, last)
                }
            };
            pending = again;
            if !pending.is_empty() && !retries.wait(None).await {
                return Err(last.unwrap_or_else(|| self.timed_out("FindCoordinator")));
            }
        }
        Ok(found)
    }

    // -- Partitions -----------------------------------------------------------------------------

    /// The offsets of partitions (ListOffsets to each leader, read uncommitted), in the order
    /// given (duplicates once). The first failing partition is reported;
    /// [`Admin::list_offsets_each`] reports each.
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_offsets<T: AsRef<str>>(
        &self,
        partitions: &[(T, i32)],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        self.list_offsets_isolated(partitions, spec, false).await
    }

    /// [`Admin::list_offsets`] with a choice of isolation: read committed makes
    /// [`OffsetSpec::Latest`] the last stable offset.
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_offsets_isolated<T: AsRef<str>>(
        &self,
        partitions: &[(T, i32)],
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<Vec<ListedOffset>> {
        self.list_offsets_each(partitions, spec, read_committed).await?.into_iter().map(|(_, r)| r).collect()
    }

    /// As [`Admin::list_offsets_isolated`], with one result per partition (in the order given,
    /// duplicates once): a partition that does not exist, or whose leader refuses it, is an
    /// error of that partition alone. Fails as a whole only if no broker answers Metadata.
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_offsets_each<T: AsRef<str>>(
        &self,
        partitions: &[(T, i32)],
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<Vec<((String, i32), Result<ListedOffset>)>> {
        let tps = dedup_by(partitions.iter().map(|(t, p)| (t.as_ref().to_owned(), *p)), |tp| tp.clone());
        let mut found = self
            .by_leader_each(tps.clone(), |leader, tps| self.list_offsets_on(leader, tps, spec, read_committed))
            .await?;
        Ok(tps
            .into_iter()
            .map(|tp| {
                let result = found.remove(&tp).unwrap_or_else(|| Err(self.timed_out("ListOffsets")));
                (tp, result)
            })
            .collect())
    }

    /// Deletes the records before `before_offset` of each partition (DeleteRecords to each
    /// leader; `-1`: up to the high watermark) and returns the new log start offsets, in the
    /// order given (duplicates once: the first offset given counts). An offset past the high
    /// watermark is an `OFFSET_OUT_OF_RANGE` error. The first failing partition is reported;
    /// [`Admin::delete_records_each`] reports each.
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the records deleted or not.
    pub async fn delete_records<T: AsRef<str>>(&self, partitions: &[(T, i32, i64)]) -> Result<Vec<DeletedRecords>> {
        self.delete_records_each(partitions).await?.into_iter().map(|(_, r)| r).collect()
    }

    /// As [`Admin::delete_records`], with one result per partition (in the order given,
    /// duplicates once). Fails as a whole only if no broker answers Metadata.
    ///
    /// Not cancel-safe: dropped, the request may have been sent and the records deleted or not.
    pub async fn delete_records_each<T: AsRef<str>>(
        &self,
        partitions: &[(T, i32, i64)],
    ) -> Result<Vec<((String, i32), Result<DeletedRecords>)>> {
        let mut before: HashMap<Tp, i64> = HashMap::new();
        for (t, p, o) in partitions {
            before.entry((t.as_ref().to_owned(), *p)).or_insert(*o);
        }
        let tps = dedup_by(partitions.iter().map(|(t, p, _)| (t.as_ref().to_owned(), *p)), |tp| tp.clone());
        let mut found =
            self.by_leader_each(tps.clone(), |leader, tps| self.delete_records_on(leader, tps, &before)).await?;
        Ok(tps
            .into_iter()
            .map(|tp| {
                let result = found.remove(&tp).unwrap_or_else(|| Err(self.timed_out("DeleteRecords")));
                (tp, result)
            })
            .collect())
    }

    // -- Transactions ---------------------------------------------------------------------------

    /// The transactions the transaction coordinators know, as `filter` selects them
    /// (ListTransactions to every broker, KIP-664), sorted by transactional id. A state in
    /// `filter.states` that the brokers do not know is an [`Error::Misuse`] naming it; a
    /// `filter.min_duration` needs ListTransactions v1 (Kafka 3.8+), else
    /// [`Error::UnsupportedVersion`].
    ///
    /// Cancel-safe: it only reads.
    pub async fn list_transactions(&self, filter: &TransactionFilter) -> Result<Vec<TransactionListing>> {
        self.client.metadata(Some(&[])).await?;
        let mut brokers = self.client.brokers();
        brokers.sort_by_key(|b| b.node_id);
        let mut out = Vec::new();
        for broker in brokers {
            let listed = self
                .retry(
                    || self.list_transactions_on(broker.node_id, filter),
                    |e| is_transport(e) || e.code().is_some_and(is_coordinator_error),
                )
                .await?;
            out.extend(listed);
        }
        out.sort_by(|a, b| (&a.transactional_id, a.coordinator).cmp(&(&b.transactional_id, b.coordinator)));
        Ok(out)
    }

    /// Describes the transactions of transactional ids (DescribeTransactions to each id's
    /// transaction coordinator, KIP-664), in the order given: state, producer id and epoch,
    /// timeout, and the start and partitions of the open transaction. An id the coordinator
    /// does not know is a `TRANSACTIONAL_ID_NOT_FOUND` error naming it.
    ///
    /// The first failing id is reported. Cancel-safe: it only reads.
    pub async fn describe_transactions(
        &self,
        transactional_ids: &[impl AsRef<str>],
    ) -> Result<Vec<TransactionDescription>> {
        let ids = dedup_by(transactional_ids.iter().map(|t| t.as_ref().to_owned()), |t| t.clone());
        let mut found = self
            .by_coordinator(CoordinatorType::Transaction, ids.clone(), |node, ts| {
                self.describe_transactions_on(node, ts)
            })
            .await?;
        ids.iter().map(|t| found.remove(t).ok_or_else(|| self.timed_out("DescribeTransactions"))).collect()
    }

    // -- Cluster --------------------------------------------------------------------------------

    /// The cluster id, controller and brokers (DescribeCluster to any broker; a broker that
    /// times out is left for another).
    ///
    /// Cancel-safe: it only reads.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let request = DescribeClusterRequest {
            include_cluster_authorized_operations: false,
            endpoint_type: 1,
            include_fenced_brokers: false,
            ..Default::default()
        };
        let response = self.retry(|| self.client.send_any(&request), is_retriable_read).await?;
        check(response.error_code, response.error_message.as_deref(), "describe cluster")?;
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: (response.controller_id >= 0).then_some(response.controller_id),
            brokers: response
                .brokers
                .iter()
                .map(|b| BrokerAddr {
                    node_id: b.broker_id,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_deref().map(str::to_owned),
                })
                .collect(),
        })
    }

    // -- Single requests ------------------------------------------------------------------------

    async fn list_groups_on(&self, node: i32, states: &[&str], types: &[&str]) -> Result<Vec<GroupListing>> {
        let conn = self.connection(node).await?;
        let version = conn.version_for::<ListGroupsRequest>()?;
        if (!states.is_empty() && version < 4) || (!types.is_empty() && version < 5) {
            return Err(unsupported::<ListGroupsRequest>(&conn, if types.is_empty() { 4 } else { 5 }));
        }
        let request = ListGroupsRequest {
            states_filter: states.iter().map(|s| (*s).into()).collect(),
            types_filter: types.iter().map(|s| (*s).into()).collect(),
            ..Default::default()
        };
        let response = conn.send_version(&request, version).await?;
        check(response.error_code, None, format!("list groups on broker {node}"))?;
        Ok(response
            .groups
            .iter()
            .map(|g| GroupListing {
                group_id: g.group_id.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: (version >= 4).then(|| g.group_state.to_string()),
                group_type: (version >= 5).then(|| g.group_type.to_string()),
                coordinator: node,
            })
            .collect())
    }

    async fn describe_groups_on(
        &self,
        node: i32,
        groups: Vec<String>,
    ) -> Result<Vec<(String, Result<GroupDescription>)>> {
        let request = DescribeGroupsRequest {
            groups: groups.iter().map(|g| g.as_str().into()).collect(),
            include_authorized_operations: false,
            ..Default::default()
        };
        let response = self.connection(node).await?.send(&request).await?;
        Ok(response
            .groups
            .iter()
            .map(|g| {
                let context = format!("describe group {}", g.group_id);
                let result = if g.error_code == ErrorCode::NONE && &*g.group_state == "Dead" {
                    Err(Error::broker(ErrorCode::GROUP_ID_NOT_FOUND, Some("the group is dead"), context))
                } else {
                    check(g.error_code, g.error_message.as_deref(), context).map(|()| GroupDescription {
                        group_id: g.group_id.to_string(),
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        protocol: g.protocol_data.to_string(),
                        members: g
                            .members
                            .iter()
                            .map(|m| MemberDescription {
                                member_id: m.member_id.to_string(),
                                group_instance_id: m.group_instance_id.as_deref().map(str::to_owned),
                                client_id: m.client_id.to_string(),
                                client_host: m.client_host.to_string(),
                                metadata: m.member_metadata.clone(),
                                assignment: m.member_assignment.clone(),
                            })
                            .collect(),
                        coordinator: node,
                    })
                };
                (g.group_id.to_string(), result)
            })
            .collect())
    }

    async fn consumer_group_describe_on(
        &self,
        node: i32,
        groups: Vec<String>,
    ) -> Result<Vec<(String, Result<ConsumerGroupDescription>)>> {
        let request = ConsumerGroupDescribeRequest {
            group_ids: groups.iter().map(|g| g.as_str().into()).collect(),
            include_authorized_operations: false,
            ..Default::default()
        };
        let response = self.connection(node).await?.send(&request).await?;
        let topics = |a: &consumer_group_describe::Assignment| -> Vec<TopicPartitions> {
            a.topic_partitions
                .iter()
                .map(|t| TopicPartitions { topic: t.topic_name.to_string(), partitions: t.partitions.clone() })
                .collect()
        };
        Ok(response
            .groups
            .iter()
            .map(|g| {
                let context = format!("describe consumer group {}", g.group_id);
                let result =
                    check(g.error_code, g.error_message.as_deref(), context).map(|()| ConsumerGroupDescription {
                        group_id: g.group_id.to_string(),
                        state: g.group_state.to_string(),
                        group_epoch: g.group_epoch,
                        assignment_epoch: g.assignment_epoch,
                        assignor: g.assignor_name.to_string(),
                        members: g
                            .members
                            .iter()
                            .map(|m| ConsumerGroupMember {
                                member_id: m.member_id.to_string(),
                                instance_id: m.instance_id.as_deref().map(str::to_owned),
                                rack_id: m.rack_id.as_deref().map(str::to_owned),
                                member_epoch: m.member_epoch,
                                client_id: m.client_id.to_string(),
                                client_host: m.client_host.to_string(),
                                subscribed_topics: m.subscribed_topic_names.iter().map(ToString::to_string).collect(),
                                subscribed_topic_regex: m.subscribed_topic_regex.as_deref().map(str::to_owned),
                                assignment: topics(&m.assignment),
                                target_assignment: topics(&m.target_assignment),
                            })
                            .collect(),
                        coordinator: node,
                    });
                (g.group_id.to_string(), result)
            })
            .collect())
    }

    async fn list_transactions_on(&self, node: i32, filter: &TransactionFilter) -> Result<Vec<TransactionListing>> {
        let conn = self.connection(node).await?;
        let version = conn.version_for::<ListTransactionsRequest>()?;
        if filter.min_duration.is_some() && version < 1 {
            return Err(unsupported::<ListTransactionsRequest>(&conn, 1));
        }
        let request = ListTransactionsRequest {
            state_filters: filter.states.iter().map(|s| s.as_str().into()).collect(),
            producer_id_filters: filter.producer_ids.clone(),
            duration_filter: filter.min_duration.map_or(-1, |d| d.as_millis().min(i64::MAX as u128) as i64),
            ..Default::default()
        };
        let response = conn.send_version(&request, version).await?;
        check(response.error_code, None, format!("list transactions on broker {node}"))?;
        if !response.unknown_state_filters.is_empty() {
            let unknown: Vec<String> = response.unknown_state_filters.iter().map(ToString::to_string).collect();
            return Err(Error::misuse("list transactions", format!("unknown state(s): {}", unknown.join(", "))));
        }
        Ok(response
            .transaction_states
            .iter()
            .map(|t| TransactionListing {
                transactional_id: t.transactional_id.to_string(),
                producer_id: t.producer_id,
                state: t.transaction_state.to_string(),
                coordinator: node,
            })
            .collect())
    }

    async fn describe_transactions_on(
        &self,
        node: i32,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Result<TransactionDescription>)>> {
        let request = DescribeTransactionsRequest {
            transactional_ids: ids.iter().map(|t| t.as_str().into()).collect(),
            ..Default::default()
        };
        let response = self.connection(node).await?.send(&request).await?;
        Ok(response
            .transaction_states
            .iter()
            .map(|t| {
                let context = format!("describe transactional id {}", t.transactional_id);
                let result = check(t.error_code, None, context).map(|()| TransactionDescription {
                    transactional_id: t.transactional_id.to_string(),
                    state: t.transaction_state.to_string(),
                    producer_id: t.producer_id,
                    producer_epoch: t.producer_epoch,
                    timeout: Duration::from_millis(t.transaction_timeout_ms.max(0) as u64),
                    start_time_ms: (t.transaction_start_time_ms >= 0).then_some(t.transaction_start_time_ms),
                    partitions: t
                        .topics
                        .iter()
                        .map(|p| TopicPartitions { topic: p.topic.to_string(), partitions: p.partitions.clone() })
                        .collect(),
                    coordinator: node,
                });
                (t.transactional_id.to_string(), result)
            })
            .collect())
    }

    async fn delete_groups_on(&self, node: i32, groups: Vec<String>) -> Result<Vec<(String, Result<()>)>> {
        let request = DeleteGroupsRequest {
            groups_names: groups.iter().map(|g| g.as_str().into()).collect(),
            ..Default::default()
        };
        let response = self.connection(node).await?.send(&request).await?;
        Ok(response
            .results
            .iter()
            .map(|r| (r.group_id.to_string(), check(r.error_code, None, format!("delete group {}", r.group_id))))
            .collect())
    }

    async fn offset_fetch_on(
        &self,
        node: i32,
        group: &str,
        wanted: Option<&[(String, Uuid, Vec<i32>)]>,
    ) -> Result<Vec<(String, Result<Vec<GroupOffset>>)>> {
        let conn = self.connection(node).await?;
        let version = conn.version_for::<OffsetFetchRequest>()?;
        let request = if version >= 8 {
            OffsetFetchRequest {
                groups: vec![OffsetFetchRequestGroup {
                    group_id: group.into(),
                    member_id: None,
                    member_epoch: -1,
                    topics: wanted.map(|ts| {
                        ts.iter()
                            .map(|(name, id, ps)| OffsetFetchRequestTopics {
                                name: name.as_str().into(),
                                topic_id: *id,
                                partition_indexes: ps.clone(),
                                ..Default::default()
                            })
                            .collect()
                    }),
                    ..Default::default()
                }],
                require_stable: false,
                ..Default::default()
            }
        } else {
            OffsetFetchRequest {
                group_id: group.into(),
                topics: wanted.map(|ts| {
                    ts.iter()
                        .map(|(name, _, ps)| OffsetFetchRequestTopic {
                            name: name.as_str().into(),
                            partition_indexes: ps.clone(),
                            ..Default::default()
                        })
                        .collect()
                }),
                require_stable: false,
                ..Default::default()
            }
        };
        let response = conn.send_version(&request, version).await?;
        let context = format!("fetch offsets of group {group}");
        // (topic name, topic id, partitions: (partition, offset, epoch, metadata, error)).
        type Row = (i32, i64, i32, Option<String>, ErrorCode);
        let mut topics: Vec<(String, Uuid, Vec<Row>)> = Vec::new();
        if version >= 8 {
            let Some(g) = response.groups.iter().find(|g| &*g.group_id == group) else {
                return Err(missing_result(conn.addr(), "OffsetFetch", group));
            };
            if let Err(e) = check(g.error_code, None, context.clone()) {
                return Ok(vec![(group.to_owned(), Err(e))]);
            }
            for t in &g.topics {
                let rows = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let metadata = p.metadata.as_deref().map(str::to_owned);
                        (p.partition_index, p.committed_offset, p.committed_leader_epoch, metadata, p.error_code)
                    })
                    .collect();
                topics.push((t.name.to_string(), t.topic_id, rows));
            }
        } else {
            if let Err(e) = check(response.error_code, None, context.clone()) {
                return Ok(vec![(group.to_owned(), Err(e))]);
            }
            for t in &response.topics {
                let rows = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let metadata = p.metadata.as_deref().map(str::to_owned);
                        (p.partition_index, p.committed_offset, p.committed_leader_epoch, metadata, p.error_code)
                    })
                    .collect();
                topics.push((t.name.to_string(), Uuid::ZERO, rows));
            }
        }
        // From v10 topics are identified by id only.
        let mut names_by_id: HashMap<Uuid, String> = HashMap::new();
        if version >= 10 {
            if let Some(ts) = wanted {
                names_by_id.extend(ts.iter().map(|(n, id, _)| (*id, n.clone())));
            }
            if topics.iter().any(|(name, id, _)| name.is_empty() && !names_by_id.contains_key(id)) {
                let md = self.client.metadata(None).await?;
                names_by_id
                    .extend(md.topics.iter().filter_map(|t| t.name.as_deref().map(|n| (t.topic_id, n.to_owned()))));
            }
        }
        let mut offsets = Vec::new();
        for (name, id, rows) in topics {
            let name =
                if name.is_empty() { names_by_id.get(&id).cloned().unwrap_or_else(|| id.to_string()) } else { name };
            for (partition, offset, epoch, metadata, error) in rows {
                if error != ErrorCode::NONE {
                    let e =
                        Error::broker(error, None, format!("fetch offsets of group {group} for {name}-{partition}"));
                    return Ok(vec![(group.to_owned(), Err(e))]);
                }
                if offset < 0 {
                    continue;
                }
                offsets.push(GroupOffset {
                    topic: name.clone(),
                    partition,
                    offset,
                    leader_epoch: (epoch >= 0).then_some(epoch),
                    metadata,
                });
            }
        }
        Ok(vec![(group.to_owned(), Ok(offsets))])
    }

    async fn offset_commit_on(
        &self,
        node: i32,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<(String, Result<()>)>> {
        let conn = self.connection(node).await?;
        let version = conn.version_for::<OffsetCommitRequest>()?;
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t.as_str()).or_default().push((*p, *o));
        }
        let ids = if version >= 10 {
            let names: Vec<&str> = by_topic.keys().copied().collect();
            self.topic_partitions(&names).await?.into_iter().map(|(n, id, _)| (n, id)).collect()
        } else {
            HashMap::new()
        };
        let request = OffsetCommitRequest {
            group_id: group.into(),
            generation_id_or_member_epoch: -1,
            member_id: "".into(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: by_topic
                .iter()
                .map(|(t, ps)| OffsetCommitRequestTopic {
                    name: (*t).into(),
                    topic_id: ids.get(*t).copied().unwrap_or(Uuid::ZERO),
                    partitions: ps
                        .iter()
                        .map(|(p, o)| OffsetCommitRequestPartition {
                            partition_index: *p,
                            committed_offset: *o,
                            committed_leader_epoch: -1,
                            committed_metadata: Some("".into()),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let response = conn.send_version(&request, version).await?;
        let names_by_id: HashMap<Uuid, &str> = ids.iter().map(|(n, id)| (*id, n.as_str())).collect();
        let mut first_error = None;
        for t in &response.topics {
            let name =
                if t.name.is_empty() { names_by_id.get(&t.topic_id).copied().unwrap_or_default() } else { &*t.name };
            for p in &t.partitions {
                if p.error_code != ErrorCode::NONE {
                    let e = Error::broker(
                        p.error_code,
                        None,
                        format!("commit offset of group {group} for {name}-{}", p.partition_index),
                    );
                    // A coordinator error anywhere makes the whole commit retried.
                    if is_coordinator_error(p.error_code) {
                        return Ok(vec![(group.to_owned(), Err(e))]);
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Ok(vec![(group.to_owned(), first_error.map_or(Ok(()), Err))])
    }

    async fn offset_delete_on(&self, node: i32, group: &str, tps: &[Tp]) -> Result<Vec<(String, Result<()>)>> {
        let request = OffsetDeleteRequest {
            group_id: group.into(),
            topics: by_topic(tps)
                .into_iter()
                .map(|(t, ps)| OffsetDeleteRequestTopic {
                    name: t.into(),
                    partitions: ps
                        .into_iter()
                        .map(|p| OffsetDeleteRequestPartition { partition_index: p, ..Default::default() })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let response = self.connection(node).await?.send(&request).await?;
        let mut result = check(response.error_code, None, format!("delete offsets of group {group}"));
        if result.is_ok() {
            'outer: for t in &response.topics {
                for p in &t.partitions {
                    let context = format!("delete offset of group {group} for {}-{}", t.name, p.partition_index);
                    if let Err(e) = check(p.error_code, None, context) {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
        }
        Ok(vec![(group.to_owned(), result)])
    }

    async fn list_offsets_on(
        &self,
        leader: i32,
        tps: Vec<Tp>,
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<Vec<(Tp, Result<ListedOffset>)>> {
        let conn = self.connection(leader).await?;
        let version = conn.version_for::<ListOffsetsRequest>()?;
        if version < spec.min_version() {
            return Err(unsupported::<ListOffsetsRequest>(&conn, spec.min_version()));
        }
        let request = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: i8::from(read_committed),
            topics: by_topic(&tps)
                .into_iter()
                .map(|(t, ps)| ListOffsetsTopic {
                    name: t.into(),
                    partitions: ps
                        .into_iter()
                        .map(|p| ListOffsetsPartition {
                            partition_index: p,
                            current_leader_epoch: -1,
                            timestamp: spec.wire(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            timeout_ms: self.server_timeout_ms(),
            ..Default::default()
        };
        let response = conn.send_version(&request, version).await?;
        let mut out = Vec::new();
        for t in &response.topics {
            for p in &t.partitions {
                let tp = (t.name.to_string(), p.partition_index);
                let context = format!("list offsets of {}-{}", t.name, p.partition_index);
                let result = check(p.error_code, None, context).map(|()| ListedOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.offset,
                    timestamp: (p.timestamp >= 0).then_some(p.timestamp),
                    leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                });
                out.push((tp, result));
            }
        }
        Ok(out)
    }

    async fn delete_records_on(
        &self,
        leader: i32,
        tps: Vec<Tp>,
        before: &HashMap<Tp, i64>,
    ) -> Result<Vec<(Tp, Result<DeletedRecords>)>> {
        let request = DeleteRecordsRequest {
            topics: by_topic(&tps)
                .into_iter()
                .map(|(t, ps)| DeleteRecordsTopic {
                    name: t.into(),
                    partitions: ps
                        .into_iter()
                        .map(|p| DeleteRecordsPartition {
                            partition_index: p,
                            offset: before.get(&(t.to_owned(), p)).copied().unwrap_or(-1),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            timeout_ms: self.server_timeout_ms(),
            ..Default::default()
        };
        let response = self.connection(leader).await?.send(&request).await?;
        let mut out = Vec::new();
        for t in &response.topics {
            for p in &t.partitions {
                let tp = (t.name.to_string(), p.partition_index);
                let context = format!("delete records of {}-{}", t.name, p.partition_index);
                let result = check(p.error_code, None, context).map(|()| DeletedRecords {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    low_watermark: p.low_watermark,
                });
                out.push((tp, result));
            }
        }
        Ok(out)
    }

    // -- Routing and retries --------------------------------------------------------------------

    /// Sends per-partition requests to each partition's leader, retrying the partitions whose
    /// leader moved (after a metadata refresh) until the timeout; one result per partition.
    /// Fails as a whole only if the metadata cannot be read.
    async fn by_leader_each<T, F, Fut>(&self, partitions: Vec<Tp>, mut send: F) -> Result<HashMap<Tp, Result<T>>>
    where
        F: FnMut(i32, Vec<Tp>) -> Fut,
        Fut: Future<Output = Result<Vec<(Tp, Result<T>)>>>,
    {
        let mut done = HashMap::new();
        let mut pending = partitions;
        let mut retries = Retry::new(&self.client, self.timeout);
        while !pending.is_empty() {
            let leaders = self.leaders(&pending).await?;
            let mut by_node: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
            let mut again = Vec::new();
            let mut last = None;
            for tp in pending {
                match leaders.get(&tp) {
                    Some(Ok(leader)) if *leader >= 0 => by_node.entry(*leader).or_default().push(tp),
                    Some(Err(e)) => {
                        done.insert(tp, Err(e.clone()));
                    }
                    _ => {
                        let context = format!("leader of {}-{}", tp.0, tp.1);
                        last = Some(Error::broker(ErrorCode::LEADER_NOT_AVAILABLE, None, context));
                        again.push(tp);
                    }
                }
            }
            for (node, tps) in by_node {
                match send(node, tps.clone()).await {
                    Err(e) if is_transport(&e) => {
                        again.extend(tps);
                        last = Some(e);
                    }
                    Err(e) => {
                        for tp in tps {
                            done.insert(tp, Err(e.clone()));
                        }
                    }
                    Ok(results) => {
                        let mut answered = HashSet::new();
                        for (tp, result) in results {
                            if !tps.contains(&tp) || !answered.insert(tp.clone()) {
                                continue;
                            }
                            match result {
                                Err(e) if e.code().is_some_and(is_leader_error) => {
                                    again.push(tp);
                                    last = Some(e);
                                }
                                result => {
                                    done.insert(tp, result);
                                }
                            }
                        }
                        for tp in tps.into_iter().filter(|tp| !answered.contains(tp)) {
                            let e = Error::Protocol {
                                broker: format!("node {node}"),
                                reason: format!("no result for {}-{} in the response", tp.0, tp.1),
                            };
                            done.insert(tp, Err(e));
                        }
                    }
                }
            }
            // The next round reads the metadata afresh.
            pending = again;
            if !pending.is_empty() && !retries.wait(None).await {
                let e = last.unwrap_or_else(|| self.timed_out("partition request"));
                for tp in pending {
                    done.insert(tp, Err(e.clone()));
                }
                break;
            }
        }
        Ok(done)
    }

    /// As [`Admin::by_coordinator_each`], failing with the first group's error (in `groups`'
    /// order).
    async fn by_coordinator<T, F, Fut>(
        &self,
        key_type: CoordinatorType,
        groups: Vec<String>,
        send: F,
    ) -> Result<HashMap<String, T>>
    where
        F: FnMut(i32, Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, Result<T>)>>>,
    {
        let mut results = self.by_coordinator_each(key_type, groups.clone(), send).await?;
        let mut done = HashMap::new();
        for g in groups {
            if let Some(result) = results.remove(&g) {
                done.insert(g, result?);
            }
        }
        Ok(done)
    }

    /// Sends per-group (or per-transactional-id: `key_type`) requests to each key's
    /// coordinator through the client's router, which retries the keys whose coordinator moved,
    /// is loading or cannot be reached until the timeout; one result per key.
    async fn by_coordinator_each<T, F, Fut>(
        &self,
        key_type: CoordinatorType,
        groups: Vec<String>,
        send: F,
    ) -> Result<HashMap<String, Result<T>>>
    where
        F: FnMut(i32, Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, Result<T>)>>>,
    {
        let retry = Retry::new(&self.client, self.timeout);
        Ok(self.client.to_coordinators(key_type, groups, retry, |_| false, send).await)
    }

    /// Runs `attempt` until it succeeds, fails with an error `retriable` refuses, or the
    /// timeout passes (then its last error).
    async fn retry<T, F, Fut>(&self, mut attempt: F, retriable: impl Fn(&Error) -> bool) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retries = Retry::new(&self.client, self.timeout);
        loop {
            match attempt().await {
                Err(e) if retriable(&e) => {
                    tracing::debug!(error = %e, "admin request failed; retrying");
                    if !retries.wait(None).await {
                        return Err(e);
                    }
                }
                result => return result,
            }
        }
    }

    /// The connection to `node_id`, refreshing the broker list first if it does not know it.
    async fn connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        if !self.client.brokers().iter().any(|b| b.node_id == node_id) {
            self.client.metadata(Some(&[])).await?;
        }
        self.client.broker(node_id).await
    }

    /// Sends to `node` (`None`: any broker); returns the broker's address with the response.
    async fn send_to<R: Request>(&self, node: Option<i32>, request: &R) -> Result<(String, R::Response)> {
        let conn = match node {
            Some(n) => self.connection(n).await?,
            None => self.client.any_broker().await?,
        };
        let response = conn.send(request).await?;
        Ok((conn.addr().to_owned(), response))
    }

    /// Sends to the controller of the last metadata, or to any broker if that is unknown or
    /// unreachable (in KRaft mode every broker forwards controller requests).
    async fn send_to_controller<R: Request>(&self, request: &R) -> Result<(String, R::Response)> {
        let conn = match self.client.controller_id() {
            Some(id) => match self.connection(id).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(controller = id, error = %e, "controller unreachable; using any broker");
                    self.client.any_broker().await?
                }
            },
            None => self.client.any_broker().await?,
        };
        let response = conn.send(request).await?;
        Ok((conn.addr().to_owned(), response))
    }

    async fn refresh_metadata(&self) {
        if let Err(e) = self.client.metadata(Some(&[])).await {
            tracing::debug!(error = %e, "metadata refresh failed");
        }
    }

    /// The leader of each partition (`-1`: none right now); a topic or partition that does not
    /// exist is an `UNKNOWN_TOPIC_OR_PARTITION` error of that partition.
    async fn leaders(&self, tps: &[Tp]) -> Result<HashMap<Tp, Result<i32>>> {
        let names: Vec<&str> = dedup_by(tps.iter().map(|(t, _)| t.as_str()), |t| *t);
        let md = self.client.metadata(Some(&names)).await?;
        let mut leaders = HashMap::new();
        for (topic, partition) in tps {
            let leader = find_topic(&md, topic).and_then(|t| {
                if t.error_code != ErrorCode::NONE {
                    return Ok(-1);
                }
                let p = t.partitions.iter().find(|p| p.partition_index == *partition).ok_or_else(|| {
                    Error::broker(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        Some("no such partition"),
                        format!("partition {topic}-{partition}"),
                    )
                })?;
                Ok(p.leader_id)
            });
            leaders.insert((topic.clone(), *partition), leader);
        }
        Ok(leaders)
    }

    /// Name, id and partitions of each topic. A topic that does not exist is an
    /// `UNKNOWN_TOPIC_OR_PARTITION` error.
    async fn topic_partitions(&self, topics: &[&str]) -> Result<Vec<(String, Uuid, Vec<i32>)>> {
        let md = self.client.metadata(Some(topics)).await?;
        let mut out = Vec::new();
        for topic in dedup_by(topics.iter().copied(), |t| *t) {
            let t = find_topic(&md, topic)?;
            check(t.error_code, None, format!("topic {topic}"))?;
            let mut ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            ps.sort_unstable();
            out.push((topic.to_owned(), t.topic_id, ps));
        }
        Ok(out)
    }

    /// Waits until each topic has (at least) the given number of partitions (any if `< 1`),
    /// each with a leader, in the metadata of every broker that answers; returns the partition
    /// counts. Every broker, not one: a broker learns a new topic a little after the controller
    /// made it, and a caller that goes on to ask another one (a ListOffsets, a group's
    /// coordinator committing offsets) would get UNKNOWN_TOPIC_OR_PARTITION (seen on a 3-node
    /// Kafka 3.9.2 cluster). A broker that cannot be reached is not waited for.
    async fn wait_for_leaders(&self, topics: &[(&str, i32)]) -> Result<HashMap<String, i32>> {
        let names: Vec<&str> = topics.iter().map(|(t, _)| *t).collect();
        let request = MetadataRequest {
            topics: Some(
                names.iter().map(|t| MetadataRequestTopic { name: Some((*t).into()), ..Default::default() }).collect(),
            ),
            allow_auto_topic_creation: false,
            ..Default::default()
        };
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            // The bootstrap's answer first (it also refreshes the brokers known), then each broker's.
            let mut answers = vec![self.client.metadata(Some(&names)).await?];
            for broker in self.client.brokers() {
                match self.client.send(broker.node_id, &request).await {
                    Ok(md) => answers.push(md),
                    Err(e) if is_retriable_read(&e) => {
                        tracing::debug!(node = broker.node_id, error = %e, "metadata of a new topic: broker not asked")
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut counts = HashMap::new();
            for (name, expected) in topics {
                let partitions = answers.iter().map(|md| {
                    md.topics
                        .iter()
                        .find(|t| t.name.as_deref() == Some(*name))
                        .filter(|t| {
                            t.error_code == ErrorCode::NONE
                                && !t.partitions.is_empty()
                                && t.partitions.len() >= (*expected).max(1) as usize
                                && t.partitions.iter().all(|p| p.leader_id >= 0)
                        })
                        .map(|t| t.partitions.len())
                });
                if let Some(fewest) = partitions.collect::<Option<Vec<usize>>>().and_then(|n| n.into_iter().min()) {
                    counts.insert((*name).to_owned(), fewest as i32);
                }
            }
            if counts.len() == topics.len() {
                return Ok(counts);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for leaders of {}", names.join(", ")),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Waits until the metadata no longer lists any of `topics`.
    async fn wait_for_absence(&self, topics: &[&str]) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let md = self.client.metadata(Some(topics)).await?;
            let present = md.topics.iter().any(|t| {
                t.error_code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                    && t.name.as_deref().is_some_and(|n| topics.contains(&n))
            });
            if !present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for the deletion of {}", topics.join(", ")),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The broker-side timeout of topic operations: the admin timeout, but short enough that the
    /// broker answers before the connection's request timeout.
    fn server_timeout_ms(&self) -> i32 {
        let request_timeout = self.client.config().connection.request_timeout;
        let t = self.timeout.min(request_timeout.saturating_sub(Duration::from_secs(1)));
        t.max(Duration::from_millis(100)).as_millis().min(i32::MAX as u128) as i32
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::Timeout { what: what.to_owned(), after: self.timeout }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Connection failures: the request may be sent again (to another broker).
fn is_transport(e: &Error) -> bool {
    // An unreachable broker is retried, unless it refused the client's TLS or SASL credentials.
    matches!(e, Error::Io { .. } | Error::Closed { .. }) || matches!(e, Error::Unreachable { .. } if e.is_retriable())
}

/// For requests that only read: also a request timeout (the broker stopped answering; the
/// connection has been closed), after which the request goes to another broker.
fn is_retriable_read(e: &Error) -> bool {
    is_transport(e) || matches!(e, Error::Timeout { .. })
}

/// The partition's leader moved or is not ready.
fn is_leader_error(code: ErrorCode) -> bool {
    matches!(
        code,
        // From the leader the metadata named: it has not yet learned of the partition (a topic
        // just created; Kafka 3.9 takes a moment). A topic that does not exist fails earlier,
        // at the leader lookup.
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::LEADER_NOT_AVAILABLE
            | ErrorCode::FENCED_LEADER_EPOCH
            | ErrorCode::UNKNOWN_LEADER_EPOCH
            | ErrorCode::OFFSET_NOT_AVAILABLE
            | ErrorCode::REPLICA_NOT_AVAILABLE
            | ErrorCode::REQUEST_TIMED_OUT
            | ErrorCode::KAFKA_STORAGE_ERROR
    )
}

fn broker_error(code: ErrorCode, message: Option<&str>, context: String) -> Error {
    Error::broker(code, message.filter(|m| !m.is_empty()), context)
}

fn check(code: ErrorCode, message: Option<&str>, context: impl Into<String>) -> Result<()> {
    if code == ErrorCode::NONE {
        Ok(())
    } else {
        Err(broker_error(code, message, context.into()))
    }
}

fn missing_result(broker: &str, api: &str, item: &str) -> Error {
    Error::Protocol { broker: broker.to_owned(), reason: format!("the {api} response has no result for {item}") }
}

fn unsupported<R: Request>(conn: &Connection, min: i16) -> Error {
    Error::UnsupportedVersion {
        api: R::API_KEY,
        client: VersionRange { min: min.max(R::VERSIONS.min), max: R::VERSIONS.max },
        broker: conn.broker_versions(R::API_KEY),
        broker_addr: conn.addr().to_owned(),
    }
}

/// The items in order, without repeats (by `key`).
fn dedup_by<T, K: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|t| seen.insert(key(t))).collect()
}

/// Partitions grouped by topic, in order.
fn by_topic(tps: &[Tp]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        out.entry(t.as_str()).or_default().push(*p);
    }
    out
}

fn find_topic<'a>(md: &'a MetadataResponse, topic: &str) -> Result<&'a MetadataResponseTopic> {
    let t = md.topics.iter().find(|t| t.name.as_deref() == Some(topic));
    match t {
        Some(t) if t.error_code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => Ok(t),
        _ => Err(Error::broker(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None, format!("topic {topic}"))),
    }
}

/// The entries of one resource of a DescribeConfigs response.
fn config_entries(result: &crate::codec::messages::describe_configs::DescribeConfigsResult) -> Vec<ConfigEntry> {
    result
        .configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_deref().map(str::to_owned),
            read_only: c.read_only,
            source: ConfigSource::from_code(c.config_source),
            is_sensitive: c.is_sensitive,
            synonyms: c
                .synonyms
                .iter()
                .map(|s| ConfigSynonym {
                    name: s.name.to_string(),
                    value: s.value.as_deref().map(str::to_owned),
                    source: ConfigSource::from_code(s.source),
                })
                .collect(),
            config_type: c.config_type,
        })
        .collect()
}

/// The typed view of a topic of a Metadata response, partitions by id.
fn topic_metadata(name: &str, t: &MetadataResponseTopic) -> TopicMetadata {
    let mut partitions: Vec<PartitionMetadata> = t
        .partitions
        .iter()
        .map(|p| PartitionMetadata {
            partition: p.partition_index,
            leader: (p.leader_id >= 0).then_some(p.leader_id),
            leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
            replicas: p.replica_nodes.clone(),
            isr: p.isr_nodes.clone(),
            offline: p.offline_replicas.clone(),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicMetadata { name: name.to_owned(), id: t.topic_id, internal: t.is_internal, partitions }
}

/// The partitions of a consumer protocol assignment (`ConsumerProtocolAssignment` v0-v3:
/// version, `[topic, [partition]]`, user data).
fn decode_consumer_assignment(mut buf: Bytes) -> DecodeResult<Vec<(String, Vec<i32>)>> {
    let mut out = Vec::new();
    if buf.is_empty() {
        return Ok(out);
    }
    let _version = get_i16(&mut buf, "assignment version")?;
    // Both counts are checked against the bytes left (6 and 4 bytes at least per item), so
    // reserving them follows the input.
    let topics = get_array_len(&mut buf, false, 6, "assigned topics")?.unwrap_or(0);
    out.reserve(topics);
    for _ in 0..topics {
        let topic = get_string(&mut buf, false, "assigned topic")?;
        let count = get_array_len(&mut buf, false, 4, "assigned partitions")?.unwrap_or(0);
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            partitions.push(get_i32(&mut buf, "assigned partition")?);
        }
        out.push((topic.to_string(), partitions));
    }
    Ok(out)
}

/// The topics of a consumer protocol subscription (`ConsumerProtocolSubscription` v0-v3:
/// version, `[topic]`, ...).
fn decode_consumer_subscription(mut buf: Bytes) -> DecodeResult<Vec<String>> {
    let _version = get_i16(&mut buf, "subscription version")?;
    let topics = get_array_len(&mut buf, false, 2, "subscribed topics")?.unwrap_or(0);
    (0..topics).map(|_| get_string(&mut buf, false, "subscribed topic").map(|t| t.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::primitives::{put_array_len, put_i16, put_i32, put_nullable_bytes, put_string};

    #[test]
    fn consumer_assignment_decodes() {
        let mut buf = BytesMut::new();
        put_i16(&mut buf, 3);
        put_array_len(&mut buf, false, Some(2), "t").unwrap();
        put_string(&mut buf, false, "a", "t").unwrap();
        put_array_len(&mut buf, false, Some(2), "t").unwrap();
        put_i32(&mut buf, 0);
        put_i32(&mut buf, 2);
        put_string(&mut buf, false, "b", "t").unwrap();
        put_array_len(&mut buf, false, Some(1), "t").unwrap();
        put_i32(&mut buf, 1);
        put_nullable_bytes(&mut buf, false, None, "t").unwrap();
        let parts = decode_consumer_assignment(buf.freeze()).unwrap();
        assert_eq!(parts, vec![("a".into(), vec![0, 2]), ("b".into(), vec![1])]);
        assert_eq!(decode_consumer_assignment(Bytes::new()).unwrap(), vec![]);
        assert!(decode_consumer_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }

    #[test]
    fn consumer_subscription_decodes() {
        let mut buf = BytesMut::new();
        put_i16(&mut buf, 1);
        put_array_len(&mut buf, false, Some(1), "t").unwrap();
        put_string(&mut buf, false, "t", "t").unwrap();
        put_nullable_bytes(&mut buf, false, None, "t").unwrap();
        put_array_len(&mut buf, false, Some(0), "t").unwrap();
        assert_eq!(decode_consumer_subscription(buf.freeze()).unwrap(), vec!["t".to_owned()]);
    }

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        assert_eq!(dedup_by(["b", "a", "b", "c", "a"], |s| *s), vec!["b", "a", "c"]);
    }

    #[test]
    fn codes() {
        for t in [
            ConfigResourceType::Topic,
            ConfigResourceType::Broker,
            ConfigResourceType::BrokerLogger,
            ConfigResourceType::ClientMetrics,
            ConfigResourceType::Group,
        ] {
            assert_eq!(ConfigResourceType::from_code(t.code()), Some(t));
        }
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(OffsetSpec::MaxTimestamp.wire(), -3);
        assert_eq!(ConfigResource::broker(3).destination().unwrap(), Some(3));
        assert_eq!(ConfigResource::broker_default().destination().unwrap(), None);
        assert_eq!(ConfigResource::topic("t").destination().unwrap(), None);
        assert!(ConfigResource { resource_type: ConfigResourceType::Broker, name: "x".into() }.destination().is_err());
    }
}
