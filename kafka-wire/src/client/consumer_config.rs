//! The consumer's configuration: typed fields with the Java consumer's defaults (Kafka 4.x), a
//! builder, and Kafka's property names.
//!
//! ```
//! use kafka_wire::client::{ConsumerConfig, OffsetReset};
//! let config = ConsumerConfig::new("127.0.0.1:9092").group_id("billing").auto_offset_reset(OffsetReset::Earliest);
//! let same = ConsumerConfig::from_properties_text(
//!     "bootstrap.servers=127.0.0.1:9092\ngroup.id=billing\nauto.offset.reset=earliest\n",
//! )?;
//! assert_eq!(same.group_id, config.group_id);
//! # Ok::<(), kafka_wire::client::Error>(())
//! ```

use std::str::FromStr;
use std::time::Duration;

use super::cluster::ClientConfig;
use super::config::{boolean, int_millis, int_size, millis, parse_properties_text, split_list};
use super::connection::ConnectionConfig;
use super::error::{Error, Result};
use super::transport::SecurityConfig;
use crate::codec::frame::DEFAULT_MAX_FRAME;

/// Where to start when a partition has no committed offset, or its offset is out of range
/// (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The log end offset: only records produced from now on.
    #[default]
    Latest,
    /// No reset: the consumer reports [`Error::Config`] for `auto.offset.reset` instead.
    None,
}

impl FromStr for OffsetReset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            "none" => Ok(Self::None),
            other => Err(Error::config("auto.offset.reset", format!("{other:?} is not one of earliest, latest, none"))),
        }
    }
}

/// Which transactional records a consumer sees (`isolation.level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions.
    #[default]
    ReadUncommitted,
    /// Only committed records, and nothing past the last stable offset.
    ReadCommitted,
}

impl IsolationLevel {
    /// The value of the Fetch and ListOffsets requests' `isolation_level` field.
    pub const fn as_i8(self) -> i8 {
        match self {
            Self::ReadUncommitted => 0,
            Self::ReadCommitted => 1,
        }
    }
}

impl FromStr for IsolationLevel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "read_uncommitted" => Ok(Self::ReadUncommitted),
            "read_committed" => Ok(Self::ReadCommitted),
            other => Err(Error::config(
                "isolation.level",
                format!("{other:?} is not one of read_uncommitted, read_committed"),
            )),
        }
    }
}

/// Which consumer group protocol a subscribing consumer uses (`group.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// JoinGroup / SyncGroup / Heartbeat, with client-side assignment.
    #[default]
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat with server-side assignment (Kafka 4.0+).
    Consumer,
}

impl FromStr for GroupProtocol {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "consumer" => Ok(Self::Consumer),
            other => Err(Error::config("group.protocol", format!("{other:?} is not one of classic, consumer"))),
        }
    }
}

/// The consumer's settings. Field docs name the Kafka property and its default.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `bootstrap.servers` (required).
    pub bootstrap_servers: Vec<String>,
    /// `client.id`.
    pub client_id: Option<String>,
    /// `group.id`: needed to subscribe and to commit offsets.
    pub group_id: Option<String>,
    /// `group.instance.id`: static membership (KIP-345).
    pub group_instance_id: Option<String>,
    /// `group.protocol` (classic).
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor`: the server-side assignor of the consumer protocol (the broker's
    /// default when `None`).
    pub group_remote_assignor: Option<String>,
    /// `partition.assignment.strategy` (range, cooperative-sticky), by name: `range`,
    /// `roundrobin`, `cooperative-sticky`, or the Java class names.
    pub partition_assignment_strategy: Vec<String>,
    /// `session.timeout.ms` (45 s).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` (3 s).
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (5 min): also the rebalance timeout.
    pub max_poll_interval: Duration,
    /// `auto.offset.reset` (latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` (true).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (5 s).
    pub auto_commit_interval: Duration,
    /// `isolation.level` (read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `fetch.min.bytes` (1).
    pub fetch_min_bytes: usize,
    /// `fetch.max.wait.ms` (500 ms).
    pub fetch_max_wait: Duration,
    /// `fetch.max.bytes` (50 MiB): what a Fetch asks the broker for, and the decompression
    /// budget: the most fetched bytes held decompressed (or uncompressed) ahead of the
    /// application, across partitions. Compressed batches are decompressed ahead only within
    /// it (a little per partition, 128 KiB or one batch); one that does not fit waits until
    /// the application has taken enough, and one that alone decompresses to more is refused
    /// ([`Error::CorruptRecord`]).
    ///
    /// [`Error::CorruptRecord`]: super::Error::CorruptRecord
    pub fetch_max_bytes: usize,
    /// `max.partition.fetch.bytes` (1 MiB).
    pub max_partition_fetch_bytes: usize,
    /// `max.poll.records` (500).
    pub max_poll_records: usize,
    /// `queued.max.messages.kbytes` (librdkafka's name; 65536): fetched bytes buffered ahead of
    /// the application, across partitions: compressed batches at their size on the wire, the
    /// others at their decompressed size. Fetching pauses above it. Memory held for fetched
    /// records is bounded by this plus `fetch.max.bytes` (decompressed ahead) plus one answer
    /// per broker with a fetch in flight, plus what paused partitions keep (about two
    /// `max.partition.fetch.bytes` each, outside this budget so that they cannot stop the
    /// others' fetches).
    pub prefetch_max_bytes: usize,
    /// `request.timeout.ms` (30 s).
    pub request_timeout: Duration,
    /// `default.api.timeout.ms` (60 s): the limit of blocking calls such as `commit`.
    pub default_api_timeout: Duration,
    /// `retry.backoff.ms` (100 ms).
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms` (1 s).
    pub retry_backoff_max: Duration,
    /// `metadata.max.age.ms` (5 min): also how often a pattern subscription looks for new topics.
    pub metadata_max_age: Duration,
    /// `client.rack`.
    pub client_rack: Option<String>,
    /// `check.crcs` (true): check each fetched batch's CRC-32C. A mismatch stops the partition
    /// at that batch with [`Error::CorruptRecord`] from `poll` until the application seeks past
    /// it (as Java's consumer does); with false, the batch is used as it is.
    ///
    /// [`Error::CorruptRecord`]: super::Error::CorruptRecord
    pub check_crcs: bool,
    /// `socket.connection.setup.timeout.ms` (10 s).
    pub socket_connection_setup_timeout: Duration,
    /// `receive.message.max.bytes` (librdkafka's name; 100 MiB): the largest response frame.
    pub receive_message_max_bytes: usize,
    /// `security.protocol`, `ssl.*` and `sasl.*`: TLS and SASL. Default plaintext.
    pub security: SecurityConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: Vec::new(),
            client_id: None,
            group_id: None,
            group_instance_id: None,
            group_protocol: GroupProtocol::Classic,
            group_remote_assignor: None,
            partition_assignment_strategy: vec!["range".into(), "cooperative-sticky".into()],
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            isolation_level: IsolationLevel::ReadUncommitted,
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
            prefetch_max_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            default_api_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            metadata_max_age: Duration::from_secs(300),
            client_rack: None,
            check_crcs: true,
            socket_connection_setup_timeout: Duration::from_secs(10),
            receive_message_max_bytes: DEFAULT_MAX_FRAME,
            security: SecurityConfig::default(),
        }
    }
}

impl ConsumerConfig {
    /// Defaults with a comma-separated `bootstrap.servers` list.
    pub fn new(bootstrap_servers: &str) -> Self {
        Self { bootstrap_servers: split_list(bootstrap_servers), ..Self::default() }
    }

    /// Sets `group.id`.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Sets `group.instance.id`: static membership (KIP-345).
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Sets `group.protocol`: classic, or the consumer protocol of KIP-848.
    pub fn group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.group_protocol = protocol;
        self
    }

    /// Sets `partition.assignment.strategy`: assignor names, in order of preference.
    pub fn assignment_strategy(mut self, names: &[&str]) -> Self {
        self.partition_assignment_strategy = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets `auto.offset.reset`.
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// Sets `enable.auto.commit`.
    pub fn enable_auto_commit(mut self, enable: bool) -> Self {
        self.enable_auto_commit = enable;
        self
    }

    /// Sets `isolation.level` (KIP-98).
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// Sets `session.timeout.ms`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets `heartbeat.interval.ms`.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets `max.poll.interval.ms`.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Sets `max.poll.records`.
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// Sets one property by its Kafka name. An unknown property or a bad value is
    /// [`Error::Config`] naming it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim();
        let value = value.trim();
        let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        match key {
            "bootstrap.servers" => {
                self.bootstrap_servers = split_list(value);
                if self.bootstrap_servers.is_empty() {
                    return Err(Error::config(key, "no address given"));
                }
            }
            "client.id" => self.client_id = non_empty(value),
            "group.id" => self.group_id = non_empty(value),
            "group.instance.id" => self.group_instance_id = non_empty(value),
            "group.protocol" => self.group_protocol = value.parse()?,
            "group.remote.assignor" => self.group_remote_assignor = non_empty(value),
            "partition.assignment.strategy" => {
                let names = split_list(value);
                if names.is_empty() {
                    return Err(Error::config(key, "no assignor given"));
                }
                self.partition_assignment_strategy = names;
            }
            "session.timeout.ms" => self.session_timeout = int_millis(key, value)?,
            "heartbeat.interval.ms" => self.heartbeat_interval = int_millis(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval = int_millis(key, value)?,
            "auto.offset.reset" => self.auto_offset_reset = value.parse()?,
            "enable.auto.commit" => self.enable_auto_commit = boolean(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval = int_millis(key, value)?,
            "isolation.level" => self.isolation_level = value.parse()?,
            "fetch.min.bytes" => self.fetch_min_bytes = int_size(key, value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = int_millis(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = int_size(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = int_size(key, value)?,
            "max.poll.records" => {
                self.max_poll_records = int_size(key, value)?;
                if self.max_poll_records == 0 {
                    return Err(Error::config(key, "must be at least 1"));
                }
            }
            "queued.max.messages.kbytes" => self.prefetch_max_bytes = int_size(key, value)?.saturating_mul(1024),
            "request.timeout.ms" => self.request_timeout = int_millis(key, value)?,
            "default.api.timeout.ms" => self.default_api_timeout = int_millis(key, value)?,
            "retry.backoff.ms" => self.retry_backoff = millis(key, value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = millis(key, value)?,
            "metadata.max.age.ms" => self.metadata_max_age = millis(key, value)?,
            "client.rack" => self.client_rack = non_empty(value),
            "check.crcs" => self.check_crcs = boolean(key, value)?,
            "socket.connection.setup.timeout.ms" => self.socket_connection_setup_timeout = millis(key, value)?,
            "receive.message.max.bytes" => self.receive_message_max_bytes = int_size(key, value)?,
            "key.deserializer" | "value.deserializer" => {
                if !value.starts_with("org.apache.kafka.common.serialization.") {
                    return Err(Error::config(
                        key,
                        "this client hands out bytes; only Kafka's own deserializer classes are accepted (and ignored)",
                    ));
                }
            }
            _ if self.security.set(key, value)? => {}
            _ => return Err(Error::config(key, "unknown property")),
        }
        Ok(())
    }

    /// A configuration from `(property, value)` pairs over the defaults, then
    /// [`validated`](Self::validated).
    pub fn from_properties<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut config = Self::default();
        for (key, value) in properties {
            config.set(key, value)?;
        }
        config.validated()
    }

    /// A configuration from the text of a Java `.properties` file.
    pub fn from_properties_text(text: &str) -> Result<Self> {
        Self::from_properties(parse_properties_text(text)?)
    }

    /// Checks how the values combine: bootstrap servers given, heartbeat interval below the
    /// session timeout, a group id where static membership or the consumer protocol needs one.
    pub fn validated(self) -> Result<Self> {
        if self.bootstrap_servers.is_empty() {
            return Err(Error::config("bootstrap.servers", "required, no address given"));
        }
        self.security.validate()?;
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::config("heartbeat.interval.ms", "must be lower than session.timeout.ms"));
        }
        if self.group_instance_id.is_some() && self.group_id.is_none() {
            return Err(Error::config("group.instance.id", "needs group.id"));
        }
        if self.max_poll_records == 0 {
            return Err(Error::config("max.poll.records", "must be at least 1"));
        }
        Ok(self)
    }

    /// The settings of the [`Client`](super::Client) underneath the consumer. A request may wait
    /// `fetch.max.wait.ms` at the broker, so the request timeout covers it.
    pub fn client_config(&self) -> ClientConfig {
        let defaults = ConnectionConfig::default();
        ClientConfig {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connection: ConnectionConfig {
                client_id: self.client_id.clone().or(defaults.client_id),
                connect_timeout: self.socket_connection_setup_timeout,
                request_timeout: self.request_timeout.max(self.fetch_max_wait + Duration::from_secs(5)),
                max_frame_size: self.receive_message_max_bytes,
                security: self.security.clone(),
                ..defaults
            },
        }
    }
}
