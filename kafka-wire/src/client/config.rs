//! The producer's configuration: typed fields with the Java producer's defaults (Kafka 4.x), a
//! builder, and Kafka's property names (`linger.ms=5`) so that existing `.properties` files and
//! habits carry over.
//!
//! ```
//! use std::time::Duration;
//! use kafka_wire::client::{Acks, ProducerConfig};
//! let config = ProducerConfig::new("127.0.0.1:9092")
//!     .acks(Acks::All)
//!     .linger(Duration::from_millis(20))
//!     .validated()?;
//! let from_file = ProducerConfig::from_properties_text("bootstrap.servers=127.0.0.1:9092\nlinger.ms=20\n")?;
//! assert_eq!(from_file.linger, config.linger);
//! # Ok::<(), kafka_wire::client::Error>(())
//! ```
//!
//! Validation happens in two places, as in Java: [`ProducerConfig::set`] checks one value
//! (type, range, allowed values), and [`ProducerConfig::validated`] checks how values combine
//! (idempotence, timeouts, limits of the wire format). The producer calls `validated` when it
//! starts; [`ProducerConfig::from_properties`] calls it too, since a property set is complete.

use std::str::FromStr;
use std::time::Duration;

use super::cluster::ClientConfig;
use super::connection::ConnectionConfig;
use super::error::{Error, Result};
use super::transport::SecurityConfig;
use crate::codec::compression::Compression;
use crate::codec::frame::DEFAULT_MAX_FRAME;

/// How many replicas must have a record before the broker acknowledges it (`acks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum Acks {
    /// `acks=0`: no acknowledgement; the broker does not even answer.
    None = 0,
    /// `acks=1`: the leader has written it.
    Leader = 1,
    /// `acks=all` (`-1`): all in-sync replicas have it. Required by idempotence.
    #[default]
    All = -1,
}

impl Acks {
    /// The value of ProduceRequest's `acks` field.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }
}

impl FromStr for Acks {
    type Err = Error;

    /// Kafka's allowed values: `0`, `1`, `-1` and `all` (exactly these spellings, as Java's
    /// validator compares them case-sensitively), surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "0" => Ok(Self::None),
            "1" => Ok(Self::Leader),
            "-1" | "all" => Ok(Self::All),
            other => Err(Error::config("acks", format!("{other:?} is not one of 0, 1, -1, all"))),
        }
    }
}

/// Serializer classes accepted for `key.serializer` / `value.serializer`. This client takes keys
/// and values as bytes, so only Java serializers that write the bytes they are given make sense;
/// `StringSerializer` is among them because its default encoding, UTF-8, is what a Rust `&str`
/// already is. Any other class is rejected rather than ignored, since ignoring it would send
/// bytes the configuration's author did not expect.
const PASS_THROUGH_SERIALIZERS: &[&str] = &[
    "org.apache.kafka.common.serialization.ByteArraySerializer",
    "org.apache.kafka.common.serialization.ByteBufferSerializer",
    "org.apache.kafka.common.serialization.BytesSerializer",
    "org.apache.kafka.common.serialization.StringSerializer",
];

/// Java producer properties this client does not implement: rejected with a reason that says
/// so, rather than "unknown", to tell a typo from a missing feature.
const UNSUPPORTED: &[&str] = &[
    "client.dns.lookup",
    "config.providers",
    "connections.max.idle.ms",
    "enable.metrics.push",
    "interceptor.classes",
    "metadata.max.idle.ms",
    "metadata.recovery.strategy",
    "metadata.recovery.rebootstrap.trigger.ms",
    "metric.reporters",
    "metrics.num.samples",
    "metrics.recording.level",
    "metrics.sample.window.ms",
    "partitioner.class",
    "receive.buffer.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "security.providers",
    "send.buffer.bytes",
    "socket.connection.setup.timeout.max.ms",
    "transaction.two.phase.commit.enable",
];

/// The producer's settings. Field docs name the Kafka property and its default.
///
/// Build it with [`ProducerConfig::new`] and the builder methods, or from Kafka property names
/// with [`set`](Self::set) / [`from_properties`](Self::from_properties) /
/// [`from_properties_text`](Self::from_properties_text); check it with
/// [`validated`](Self::validated).
///
/// `enable.idempotence` and `delivery.timeout.ms` behave differently when set explicitly (by
/// `set` or the builder methods of the same name) than when left at their defaults, as in Java;
/// assigning the public fields directly does not count as explicit.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// `bootstrap.servers`: `host:port` addresses to learn the cluster from. Required.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`: sent with every request, for broker logs and quotas. Default none.
    pub client_id: Option<String>,
    /// `acks`. Default [`Acks::All`].
    pub acks: Acks,
    /// `linger.ms`: how long a batch waits for more records before it is sent. Default 5 ms
    /// (Kafka 4.0 raised it from 0).
    pub linger: Duration,
    /// `batch.size`: the target size of a batch in bytes, and how much the sticky partitioner
    /// puts in one partition before moving on. 0 disables batching. Default 16384.
    pub batch_size: usize,
    /// `buffer.memory`: bytes of records the producer may hold unsent before `send` waits.
    /// Default 33554432 (32 MiB).
    pub buffer_memory: usize,
    /// `compression.type`: `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default none.
    pub compression: Compression,
    /// `compression.gzip.level` (KIP-390): 1 to 9, or -1 (default) for zlib's default, 6.
    pub compression_gzip_level: i32,
    /// `compression.lz4.level` (KIP-390): 1 to 17, default 9. Every level runs LZ4's fast
    /// compressor here (see [`compress_at`](crate::codec::compression::compress_at)).
    pub compression_lz4_level: i32,
    /// `compression.zstd.level` (KIP-390): -131072 to 22, default 3. The encoder implements
    /// levels -7 to 4; others are clamped to that.
    pub compression_zstd_level: i32,
    /// `enable.idempotence`: sequence numbers per partition so that retries do not duplicate
    /// or reorder. Default true; see [`validated`](Self::validated) for how it combines with
    /// `acks`, `retries` and `max.in.flight.requests.per.connection`.
    pub enable_idempotence: bool,
    /// `max.in.flight.requests.per.connection`: unanswered produce requests per broker, at
    /// least 1 (at most 5 with idempotence). Default 5.
    pub max_in_flight_requests_per_connection: usize,
    /// `delivery.timeout.ms`: upper bound from `send` to success or failure, retries included;
    /// at least `linger + request_timeout`. Default 120 s.
    pub delivery_timeout: Duration,
    /// `request.timeout.ms`: how long to wait for a broker's answer (also sent as the
    /// ProduceRequest timeout). Default 30 s.
    pub request_timeout: Duration,
    /// `retries`: how often a failed batch is retried (within `delivery_timeout`). Default
    /// 2147483647 (Java's `Integer.MAX_VALUE`: bounded by the delivery timeout instead).
    pub retries: u32,
    /// `retry.backoff.ms`: the first wait before a retry, doubling per attempt. Default 100 ms.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: the cap of that exponential backoff. Default 1 s. If it is below
    /// `retry_backoff`, Java only warns and backs off by `retry_backoff` constantly; so does
    /// this client (it is not an error).
    pub retry_backoff_max: Duration,
    /// `max.request.size`: the largest produce request (and so record) in bytes.
    /// Default 1048576.
    pub max_request_size: usize,
    /// `max.block.ms`: how long `send` waits for buffer space or topic metadata before failing.
    /// Default 60 s.
    pub max_block: Duration,
    /// `partitioner.ignore.keys`: spread keyed records like keyless ones. Default false.
    pub partitioner_ignore_keys: bool,
    /// `partitioner.adaptive.partitioning.enable`: favour partitions with shorter queues.
    /// Default true.
    pub partitioner_adaptive: bool,
    /// `partitioner.availability.timeout.ms`: accepted for compatibility but not implemented
    /// (Java's default 0 = off is this client's behaviour whatever the value).
    pub partitioner_availability_timeout: Duration,
    /// `transactional.id`: enables transactions (and requires idempotence). Default none.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open.
    /// Default 60 s.
    pub transaction_timeout: Duration,
    /// `metadata.max.age.ms`: metadata is refreshed at least this often. Default 300 s.
    pub metadata_max_age: Duration,
    /// `socket.connection.setup.timeout.ms`: how long a TCP connect may take. Default 10 s.
    pub socket_connection_setup_timeout: Duration,
    /// `receive.message.max.bytes` (librdkafka's name; Java has no equivalent): responses
    /// larger than this are refused instead of allocated. Default 104857600 (100 MiB).
    pub receive_message_max_bytes: usize,
    /// `security.protocol`, `ssl.*` and `sasl.*`: TLS and SASL. Default plaintext.
    pub security: SecurityConfig,

    /// `enable.idempotence` was set explicitly: conflicts are then errors instead of silently
    /// disabling idempotence.
    idempotence_explicit: bool,
    /// `delivery.timeout.ms` was set explicitly: too small is then an error instead of being
    /// raised to `linger + request_timeout`.
    delivery_timeout_explicit: bool,
}

impl Default for ProducerConfig {
    /// Java's defaults, with no bootstrap servers (which [`validated`](Self::validated) requires).
    fn default() -> Self {
        Self {
            bootstrap_servers: Vec::new(),
            client_id: None,
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16384,
            buffer_memory: 32 * 1024 * 1024,
            compression: Compression::None,
            compression_gzip_level: -1,
            compression_lz4_level: 9,
            compression_zstd_level: 3,
            enable_idempotence: true,
            max_in_flight_requests_per_connection: 5,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(1000),
            max_request_size: 1024 * 1024,
            max_block: Duration::from_secs(60),
            partitioner_ignore_keys: false,
            partitioner_adaptive: true,
            partitioner_availability_timeout: Duration::ZERO,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            metadata_max_age: Duration::from_secs(300),
            socket_connection_setup_timeout: Duration::from_secs(10),
            receive_message_max_bytes: DEFAULT_MAX_FRAME,
            security: SecurityConfig::default(),
            idempotence_explicit: false,
            delivery_timeout_explicit: false,
        }
    }
}

/// Largest idempotent `max.in.flight.requests.per.connection`: the broker keeps the metadata
/// of the last 5 batches per producer and partition to detect duplicates.
const MAX_IN_FLIGHT_FOR_IDEMPOTENCE: usize = 5;

/// Smallest `receive.message.max.bytes`, librdkafka's lower bound: below it even ordinary
/// metadata responses would be refused.
const MIN_RECEIVE_MESSAGE_MAX_BYTES: usize = 1000;

impl ProducerConfig {
    /// Defaults with a comma-separated `bootstrap.servers` list.
    pub fn new(bootstrap_servers: &str) -> Self {
        Self { bootstrap_servers: split_list(bootstrap_servers), ..Self::default() }
    }

    /// Sets `client.id`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Sets `acks`.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets `linger.ms`.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets `batch.size`, in bytes.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// Sets `buffer.memory`, in bytes.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    /// Sets `compression.type`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets `compression.<codec>.level` of `codec` (KIP-390); checked by
    /// [`validated`](Self::validated). Snappy and none have no level.
    pub fn compression_level(mut self, codec: Compression, level: i32) -> Self {
        match codec {
            Compression::Gzip => self.compression_gzip_level = level,
            Compression::Lz4 => self.compression_lz4_level = level,
            Compression::Zstd => self.compression_zstd_level = level,
            Compression::None | Compression::Snappy => {}
        }
        self
    }

    /// The level `compression.type` is used at: its `compression.<codec>.level` (0 for codecs
    /// without levels).
    pub fn effective_compression_level(&self) -> i32 {
        self.level_of(self.compression)
    }

    fn level_of(&self, codec: Compression) -> i32 {
        match codec {
            Compression::Gzip => self.compression_gzip_level,
            Compression::Lz4 => self.compression_lz4_level,
            Compression::Zstd => self.compression_zstd_level,
            Compression::None | Compression::Snappy => 0,
        }
    }

    /// Sets `enable.idempotence` explicitly (conflicting settings become errors).
    pub fn enable_idempotence(mut self, enable: bool) -> Self {
        self.enable_idempotence = enable;
        self.idempotence_explicit = true;
        self
    }

    /// Sets `max.in.flight.requests.per.connection`.
    pub fn max_in_flight_requests_per_connection(mut self, n: usize) -> Self {
        self.max_in_flight_requests_per_connection = n;
        self
    }

    /// Sets `delivery.timeout.ms` explicitly (less than `linger + request_timeout` becomes an
    /// error).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self.delivery_timeout_explicit = true;
        self
    }

    /// Sets `request.timeout.ms`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets `retries`.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets `retry.backoff.ms`.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets `retry.backoff.max.ms` (KIP-580).
    pub fn retry_backoff_max(mut self, backoff: Duration) -> Self {
        self.retry_backoff_max = backoff;
        self
    }

    /// Sets `max.request.size`, in bytes.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Sets `max.block.ms`.
    pub fn max_block(mut self, timeout: Duration) -> Self {
        self.max_block = timeout;
        self
    }

    /// Sets `partitioner.ignore.keys` (KIP-794).
    pub fn partitioner_ignore_keys(mut self, ignore: bool) -> Self {
        self.partitioner_ignore_keys = ignore;
        self
    }

    /// Sets `partitioner.adaptive.partitioning.enable` (KIP-794).
    pub fn partitioner_adaptive(mut self, adaptive: bool) -> Self {
        self.partitioner_adaptive = adaptive;
        self
    }

    /// Sets `transactional.id` (KIP-98), which makes the producer transactional.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// Sets `transaction.timeout.ms`.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// Sets one property by its Kafka name, checking the value on its own (combinations are
    /// checked by [`validated`](Self::validated)). Values are trimmed, numbers are decimal
    /// (sizes in bytes, `*.ms` in milliseconds), booleans are `true`/`false` in any case, as
    /// in Java.
    ///
    /// `key.serializer` / `value.serializer` are accepted only with Java serializers that pass
    /// bytes through (`ByteArraySerializer`, `ByteBufferSerializer`, `BytesSerializer`, and
    /// `StringSerializer`, whose UTF-8 is a Rust string's bytes) and then have no effect:
    /// this client takes bytes, so serializing is the caller's job.
    ///
    /// An unknown property (including Java properties this client does not implement) or a
    /// bad value is [`Error::Config`] naming the property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim();
        let value = value.trim();
        match key {
            "bootstrap.servers" => {
                let servers = split_list(value);
                if servers.is_empty() {
                    return Err(Error::config(key, "no address given"));
                }
                if let Some(dup) = servers.iter().enumerate().find_map(|(i, s)| servers[..i].contains(s).then_some(s)) {
                    return Err(Error::config(key, format!("{dup:?} is listed twice")));
                }
                self.bootstrap_servers = servers;
            }
            // Java's default is the empty string, meaning none.
            "client.id" => self.client_id = (!value.is_empty()).then(|| value.to_owned()),
            "acks" => self.acks = value.parse()?,
            "linger.ms" => self.linger = millis(key, value)?,
            "batch.size" => self.batch_size = int_size(key, value)?,
            "buffer.memory" => self.buffer_memory = long_size(key, value)?,
            "compression.type" => {
                self.compression = value.parse().map_err(|_| {
                    Error::config(key, format!("{value:?} is not one of none, gzip, snappy, lz4, zstd"))
                })?;
            }
            "compression.gzip.level" => self.compression_gzip_level = compression_level(key, value, Compression::Gzip)?,
            "compression.lz4.level" => self.compression_lz4_level = compression_level(key, value, Compression::Lz4)?,
            "compression.zstd.level" => self.compression_zstd_level = compression_level(key, value, Compression::Zstd)?,
            "enable.idempotence" => {
                self.enable_idempotence = boolean(key, value)?;
                self.idempotence_explicit = true;
            }
            "max.in.flight.requests.per.connection" => {
                let n = int_size(key, value)?;
                if n == 0 {
                    return Err(Error::config(key, "must be at least 1"));
                }
                self.max_in_flight_requests_per_connection = n;
            }
            "delivery.timeout.ms" => {
                self.delivery_timeout = int_millis(key, value)?;
                self.delivery_timeout_explicit = true;
            }
            "request.timeout.ms" => self.request_timeout = int_millis(key, value)?,
            "retries" => self.retries = non_negative(key, value, i64::from(i32::MAX))? as u32,
            "retry.backoff.ms" => self.retry_backoff = millis(key, value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = millis(key, value)?,
            "max.request.size" => self.max_request_size = int_size(key, value)?,
            "max.block.ms" => self.max_block = millis(key, value)?,
            "partitioner.ignore.keys" => self.partitioner_ignore_keys = boolean(key, value)?,
            "partitioner.adaptive.partitioning.enable" => self.partitioner_adaptive = boolean(key, value)?,
            "partitioner.availability.timeout.ms" => self.partitioner_availability_timeout = millis(key, value)?,
            "transactional.id" => {
                // Java's NonEmptyString: an empty id is a mistake, not "no transactions".
                if value.is_empty() {
                    return Err(Error::config(key, "must not be empty"));
                }
                self.transactional_id = Some(value.to_owned());
            }
            "transaction.timeout.ms" => self.transaction_timeout = int_millis(key, value)?,
            "metadata.max.age.ms" => self.metadata_max_age = millis(key, value)?,
            "socket.connection.setup.timeout.ms" => self.socket_connection_setup_timeout = millis(key, value)?,
            "receive.message.max.bytes" => {
                let n = int_size(key, value)?;
                if n < MIN_RECEIVE_MESSAGE_MAX_BYTES {
                    return Err(Error::config(key, format!("must be at least {MIN_RECEIVE_MESSAGE_MAX_BYTES}")));
                }
                self.receive_message_max_bytes = n;
            }
            "key.serializer" | "value.serializer" => {
                if !PASS_THROUGH_SERIALIZERS.contains(&value) {
                    return Err(Error::config(
                        key,
                        format!(
                            "{value:?} is not supported: this client sends keys and values as the bytes it is \
                             given (serialize them in your code); only ByteArraySerializer, \
                             ByteBufferSerializer, BytesSerializer and StringSerializer of \
                             org.apache.kafka.common.serialization are accepted"
                        ),
                    ));
                }
            }
            _ if self.security.set(key, value)? => {}
            _ if UNSUPPORTED.contains(&key) => {
                return Err(Error::config(key, "a Java producer property this client does not support"));
            }
            _ => return Err(Error::config(key, "unknown property")),
        }
        Ok(())
    }

    /// A configuration from `(property, value)` pairs applied in order over the defaults (a
    /// repeated property: the last wins, as in a Java `Properties`), then
    /// [`validated`](Self::validated).
    pub fn from_properties<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut config = Self::default();
        for (key, value) in properties {
            config.set(key, value)?;
        }
        config.validated()
    }

    /// A configuration from the text of a Java `.properties` file: `key=value`, `key: value` or
    /// `key value` lines, `#` and `!` comment lines, blank lines, surrounding whitespace
    /// trimmed; then [`validated`](Self::validated).
    ///
    /// Java's backslash escapes and continuation lines are not supported: no property of this
    /// client needs them, and a line ending in a backslash is an error rather than misread.
    pub fn from_properties_text(text: &str) -> Result<Self> {
        Self::from_properties(parse_properties_text(text)?)
    }

    /// Checks how the values combine, and resolves defaults that depend on others, as the Java
    /// producer does when it starts:
    ///
    /// - `bootstrap.servers` must be given.
    /// - Idempotence needs `acks=all` and `retries` > 0. If `enable.idempotence` was set
    ///   explicitly, a conflict is an error; if it was only defaulted, idempotence is turned
    ///   off (`enable_idempotence` becomes false). `max.in.flight.requests.per.connection` > 5
    ///   with idempotence is an error even then, as in Java.
    /// - `transactional.id` needs idempotence (after the step above).
    /// - `delivery.timeout.ms` ≥ `linger.ms` + `request.timeout.ms`: an error if it was set
    ///   explicitly, else it is raised to that sum.
    /// - `max.in.flight.requests.per.connection` ≥ 1; values that Kafka holds in 32-bit ints
    ///   (`batch.size`, `max.request.size`, `receive.message.max.bytes`, and the
    ///   `request`/`delivery`/`transaction` timeouts in ms, which go on the wire) fit; this
    ///   catches out-of-range values given through the fields or builder.
    pub fn validated(mut self) -> Result<Self> {
        if self.bootstrap_servers.is_empty() {
            return Err(Error::config("bootstrap.servers", "required, no address given"));
        }
        self.security.validate()?;
        if self.max_in_flight_requests_per_connection == 0 {
            return Err(Error::config("max.in.flight.requests.per.connection", "must be at least 1"));
        }
        let int_max = i32::MAX as usize;
        for (property, bytes) in [
            ("batch.size", self.batch_size),
            ("max.request.size", self.max_request_size),
            ("max.in.flight.requests.per.connection", self.max_in_flight_requests_per_connection),
            ("receive.message.max.bytes", self.receive_message_max_bytes),
        ] {
            if bytes > int_max {
                return Err(Error::config(property, format!("{bytes} is above {int_max}")));
            }
        }
        if self.receive_message_max_bytes < MIN_RECEIVE_MESSAGE_MAX_BYTES {
            return Err(Error::config(
                "receive.message.max.bytes",
                format!("must be at least {MIN_RECEIVE_MESSAGE_MAX_BYTES}"),
            ));
        }
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            if let Err(e) = codec.check_level(self.level_of(codec)) {
                return Err(Error::config(codec.level_key().unwrap_or("compression.level"), e.to_string()));
            }
        }
        if self.retries > i32::MAX as u32 {
            return Err(Error::config("retries", format!("{} is above {}", self.retries, i32::MAX)));
        }
        for (property, d) in [
            ("request.timeout.ms", self.request_timeout),
            ("delivery.timeout.ms", self.delivery_timeout),
            ("transaction.timeout.ms", self.transaction_timeout),
        ] {
            if d.as_millis() > i32::MAX as u128 {
                return Err(Error::config(property, format!("{d:?} is above {} ms", i32::MAX)));
            }
        }

        if self.enable_idempotence {
            let mut disable = false;
            if self.retries == 0 {
                if self.idempotence_explicit {
                    return Err(Error::config(
                        "retries",
                        "must be non-zero when using the idempotent producer (enable.idempotence=true)",
                    ));
                }
                disable = true;
            }
            if self.acks != Acks::All {
                if self.idempotence_explicit {
                    return Err(Error::config(
                        "acks",
                        "must be all when using the idempotent producer (enable.idempotence=true)",
                    ));
                }
                disable = true;
            }
            if self.max_in_flight_requests_per_connection > MAX_IN_FLIGHT_FOR_IDEMPOTENCE {
                return Err(Error::config(
                    "max.in.flight.requests.per.connection",
                    format!(
                        "must be at most {MAX_IN_FLIGHT_FOR_IDEMPOTENCE} to use the idempotent producer, \
                         is {} (set enable.idempotence=false to allow more)",
                        self.max_in_flight_requests_per_connection
                    ),
                ));
            }
            if disable {
                tracing::info!(
                    acks = ?self.acks,
                    retries = self.retries,
                    "idempotence disabled: the configuration conflicts with it and enable.idempotence was not set"
                );
                self.enable_idempotence = false;
            }
        }
        if self.transactional_id.is_some() && !self.enable_idempotence {
            return Err(Error::config(
                "transactional.id",
                "cannot be set without idempotence (check enable.idempotence, acks and retries)",
            ));
        }

        let minimum = self.linger.saturating_add(self.request_timeout);
        if self.delivery_timeout < minimum {
            if self.delivery_timeout_explicit {
                return Err(Error::config(
                    "delivery.timeout.ms",
                    format!(
                        "must be at least linger.ms + request.timeout.ms = {} ms, is {} ms",
                        minimum.as_millis(),
                        self.delivery_timeout.as_millis()
                    ),
                ));
            }
            tracing::warn!(
                delivery_timeout_ms = minimum.as_millis() as u64,
                "delivery.timeout.ms raised to linger.ms + request.timeout.ms"
            );
            self.delivery_timeout = minimum;
        }
        Ok(self)
    }

    /// The settings of the [`Client`](super::Client) underneath the producer: bootstrap
    /// servers, client id, connect and request timeouts, largest response.
    pub fn client_config(&self) -> ClientConfig {
        let defaults = ConnectionConfig::default();
        ClientConfig {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connection: ConnectionConfig {
                client_id: self.client_id.clone().or(defaults.client_id),
                connect_timeout: self.socket_connection_setup_timeout,
                request_timeout: self.request_timeout,
                max_frame_size: self.receive_message_max_bytes,
                security: self.security.clone(),
                ..defaults
            },
        }
    }
}

/// The `(key, value)` pairs of a Java `.properties` text: `key=value`, `key: value` or
/// `key value` lines, `#` and `!` comment lines, blank lines, surrounding whitespace trimmed.
/// Backslash escapes and continuation lines are not supported: a line ending in a backslash
/// is an error rather than misread.
pub(super) fn parse_properties_text(text: &str) -> Result<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        // The key ends at the first '=', ':' or whitespace, as in Java (without escapes).
        let end = line.find(|c: char| c == '=' || c == ':' || c.is_whitespace()).unwrap_or(line.len());
        let (key, rest) = line.split_at(end);
        let rest = rest.trim_start();
        // A whitespace separator may be followed by one '=' or ':' ("key = value").
        let value = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim();
        if line.ends_with('\\') {
            return Err(Error::config(key, "continuation lines (a trailing backslash) are not supported"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A comma-separated list, entries trimmed, empty entries dropped.
pub(super) fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A decimal integer in `0..=max`.
pub(super) fn non_negative(key: &str, value: &str, max: i64) -> Result<i64> {
    let n: i64 = value.parse().map_err(|_| Error::config(key, format!("{value:?} is not a number")))?;
    if n < 0 {
        return Err(Error::config(key, format!("{n} is negative")));
    }
    if n > max {
        return Err(Error::config(key, format!("{n} is above {max}")));
    }
    Ok(n)
}

/// A `compression.<codec>.level`: an integer in the codec's range (KIP-390).
fn compression_level(key: &str, value: &str, codec: Compression) -> Result<i32> {
    let level: i32 = value.trim().parse().map_err(|_| Error::config(key, format!("{value:?} is not a number")))?;
    codec.check_level(level).map_err(|e| Error::config(key, e.to_string()))
}

/// A size that Java holds in an `int`.
pub(super) fn int_size(key: &str, value: &str) -> Result<usize> {
    let n = non_negative(key, value, i64::from(i32::MAX))?;
    usize::try_from(n).map_err(|_| Error::config(key, format!("{n} does not fit in memory")))
}

/// A size that Java holds in a `long`.
pub(super) fn long_size(key: &str, value: &str) -> Result<usize> {
    let n = non_negative(key, value, i64::MAX)?;
    usize::try_from(n).map_err(|_| Error::config(key, format!("{n} does not fit in memory")))
}

/// Milliseconds that Java holds in a `long`.
pub(super) fn millis(key: &str, value: &str) -> Result<Duration> {
    Ok(Duration::from_millis(non_negative(key, value, i64::MAX)? as u64))
}

/// Milliseconds that Java holds in an `int` (and that may go on the wire as an int32).
pub(super) fn int_millis(key: &str, value: &str) -> Result<Duration> {
    Ok(Duration::from_millis(non_negative(key, value, i64::from(i32::MAX))? as u64))
}

/// Java's boolean parsing: `true` or `false`, any case.
pub(super) fn boolean(key: &str, value: &str) -> Result<bool> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(Error::config(key, format!("{value:?} is not true or false")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(result: Result<impl std::fmt::Debug>) -> (String, String) {
        match result {
            Err(Error::Config { property, reason }) => (property, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_javas() {
        let c = ProducerConfig::default();
        assert!(c.bootstrap_servers.is_empty());
        assert_eq!(c.client_id, None);
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.acks.as_i16(), -1);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.batch_size, 16384);
        assert_eq!(c.buffer_memory, 33_554_432);
        assert_eq!(c.compression, Compression::None);
        assert!(c.enable_idempotence);
        assert_eq!(c.max_in_flight_requests_per_connection, 5);
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.retries, 2_147_483_647);
        assert_eq!(c.retry_backoff, Duration::from_millis(100));
        assert_eq!(c.retry_backoff_max, Duration::from_millis(1000));
        assert_eq!(c.max_request_size, 1_048_576);
        assert_eq!(c.max_block, Duration::from_secs(60));
        assert!(!c.partitioner_ignore_keys);
        assert!(c.partitioner_adaptive);
        assert_eq!(c.partitioner_availability_timeout, Duration::ZERO);
        assert_eq!(c.transactional_id, None);
        assert_eq!(c.transaction_timeout, Duration::from_secs(60));
        assert_eq!(c.metadata_max_age, Duration::from_secs(300));
        assert_eq!(c.socket_connection_setup_timeout, Duration::from_secs(10));
        assert_eq!(c.receive_message_max_bytes, 104_857_600);

        // Defaults with bootstrap servers are valid and unchanged by validation.
        let v = ProducerConfig::new(" a:1, b:2 ,").validated().unwrap();
        assert_eq!(v.bootstrap_servers, ["a:1", "b:2"]);
        assert!(v.enable_idempotence);
        assert_eq!(v.delivery_timeout, Duration::from_secs(120));
        assert_eq!(config_error(ProducerConfig::default().validated()).0, "bootstrap.servers");
    }

    #[test]
    fn builder() {
        let c = ProducerConfig::new("h:9092")
            .client_id("me")
            .acks(Acks::Leader)
            .linger(Duration::from_millis(50))
            .batch_size(1 << 20)
            .buffer_memory(1 << 26)
            .compression(Compression::Zstd)
            .enable_idempotence(false)
            .max_in_flight_requests_per_connection(10)
            .delivery_timeout(Duration::from_secs(200))
            .request_timeout(Duration::from_secs(40))
            .retries(3)
            .retry_backoff(Duration::from_millis(10))
            .retry_backoff_max(Duration::from_millis(500))
            .max_request_size(2 << 20)
            .max_block(Duration::from_secs(5))
            .partitioner_ignore_keys(true)
            .partitioner_adaptive(false)
            .transaction_timeout(Duration::from_secs(10))
            .validated()
            .unwrap();
        assert_eq!((c.acks, c.batch_size, c.retries), (Acks::Leader, 1 << 20, 3));
        assert!(!c.enable_idempotence && c.partitioner_ignore_keys && !c.partitioner_adaptive);
        assert_eq!(c.client_id.as_deref(), Some("me"));

        let client = c.client_config();
        assert_eq!(client.bootstrap_servers, ["h:9092"]);
        assert_eq!(client.connection.client_id.as_deref(), Some("me"));
        assert_eq!(client.connection.request_timeout, Duration::from_secs(40));
        assert_eq!(client.connection.max_frame_size, 104_857_600);
    }

    #[test]
    fn every_property_parses() {
        let c = ProducerConfig::from_properties([
            ("bootstrap.servers", "a:1,b:2"),
            ("client.id", "cid"),
            ("acks", "all"),
            ("linger.ms", "7"),
            ("batch.size", "1000"),
            ("buffer.memory", "5000000000"),
            ("compression.type", "lz4"),
            ("enable.idempotence", "TRUE"),
            ("max.in.flight.requests.per.connection", "3"),
            ("delivery.timeout.ms", "90000"),
            ("request.timeout.ms", "20000"),
            ("retries", "10"),
            ("retry.backoff.ms", "200"),
            ("retry.backoff.max.ms", "2000"),
            ("max.request.size", "2097152"),
            ("max.block.ms", "0"),
            ("partitioner.ignore.keys", "true"),
            ("partitioner.adaptive.partitioning.enable", "false"),
            ("partitioner.availability.timeout.ms", "1500"),
            ("transactional.id", "tx-1"),
            ("transaction.timeout.ms", "30000"),
            ("metadata.max.age.ms", "60000"),
            ("socket.connection.setup.timeout.ms", "3000"),
            ("receive.message.max.bytes", "  1048576  "),
            ("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer"),
            ("value.serializer", "org.apache.kafka.common.serialization.StringSerializer"),
        ])
        .unwrap();
        assert_eq!(c.bootstrap_servers, ["a:1", "b:2"]);
        assert_eq!(c.client_id.as_deref(), Some("cid"));
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.linger, Duration::from_millis(7));
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.buffer_memory as u64, 5_000_000_000);
        assert_eq!(c.compression, Compression::Lz4);
        assert!(c.enable_idempotence);
        assert_eq!(c.max_in_flight_requests_per_connection, 3);
        assert_eq!(c.delivery_timeout, Duration::from_secs(90));
        assert_eq!(c.request_timeout, Duration::from_secs(20));
        assert_eq!(c.retries, 10);
        assert_eq!(c.retry_backoff, Duration::from_millis(200));
        assert_eq!(c.retry_backoff_max, Duration::from_secs(2));
        assert_eq!(c.max_request_size, 2_097_152);
        assert_eq!(c.max_block, Duration::ZERO);
        assert!(c.partitioner_ignore_keys);
        assert!(!c.partitioner_adaptive);
        assert_eq!(c.partitioner_availability_timeout, Duration::from_millis(1500));
        assert_eq!(c.transactional_id.as_deref(), Some("tx-1"));
        assert_eq!(c.transaction_timeout, Duration::from_secs(30));
        assert_eq!(c.metadata_max_age, Duration::from_secs(60));
        assert_eq!(c.socket_connection_setup_timeout, Duration::from_secs(3));
        assert_eq!(c.receive_message_max_bytes, 1_048_576);

        let mut c = ProducerConfig::default();
        for (value, acks) in [("0", Acks::None), ("1", Acks::Leader), ("-1", Acks::All), (" all ", Acks::All)] {
            c.set("acks", value).unwrap();
            assert_eq!(c.acks, acks);
        }
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            c.set("compression.type", codec).unwrap();
            assert_eq!(c.compression.name(), codec);
        }
        c.set("client.id", "").unwrap();
        assert_eq!(c.client_id, None);
    }

    #[test]
    fn compression_levels_are_kafkas_and_checked() {
        let c = ProducerConfig::default();
        assert_eq!((c.compression_gzip_level, c.compression_lz4_level, c.compression_zstd_level), (-1, 9, 3));
        let mut c = ProducerConfig::new("k:9092");
        c.set("compression.type", "zstd").unwrap();
        c.set("compression.zstd.level", "-5").unwrap();
        c.set("compression.gzip.level", "9").unwrap();
        assert_eq!(c.effective_compression_level(), -5);
        assert_eq!(c.clone().compression(Compression::Gzip).effective_compression_level(), 9);
        for (key, value) in
            [("compression.gzip.level", "0"), ("compression.lz4.level", "18"), ("compression.zstd.level", "23")]
        {
            let (property, reason) = config_error(ProducerConfig::new("k:9092").set(key, value));
            assert_eq!(property, key);
            assert!(reason.contains(value), "{reason}");
        }
        let (property, _) =
            config_error(ProducerConfig::new("k:9092").compression_level(Compression::Lz4, 0).validated());
        assert_eq!(property, "compression.lz4.level");
    }

    #[test]
    fn unknown_and_unsupported_properties_are_named() {
        let mut c = ProducerConfig::default();
        let (property, reason) = config_error(c.set("linger.msec", "5"));
        assert_eq!((property.as_str(), reason.as_str()), ("linger.msec", "unknown property"));
        for key in ["partitioner.class", "ssl.cipher.suites", "sasl.kerberos.service.name"] {
            let (property, reason) = config_error(c.set(key, "x"));
            assert_eq!(property, key);
            assert!(reason.contains("does not support"), "{reason}");
        }
        let (property, _) =
            config_error(ProducerConfig::from_properties([("bootstrap.servers", "a:1"), ("nope", "1")]));
        assert_eq!(property, "nope");
    }

    #[test]
    fn security_properties_reach_the_connections_and_sasl_needs_credentials() {
        use crate::client::{SaslMechanism, SecurityProtocol};
        let mut c = ProducerConfig::new("a:1");
        for (protocol, expected) in [
            ("PLAINTEXT", SecurityProtocol::Plaintext),
            ("ssl", SecurityProtocol::Ssl),
            ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
            ("SASL_SSL", SecurityProtocol::SaslSsl),
        ] {
            c.set("security.protocol", protocol).unwrap();
            assert_eq!(c.security.protocol, expected);
        }
        let (property, reason) = config_error(c.set("security.protocol", "TLS"));
        assert_eq!(property, "security.protocol");
        assert!(reason.contains("PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"), "{reason}");
        let (property, _) = config_error(c.clone().validated());
        assert_eq!(property, "sasl.jaas.config");
        c.set("sasl.mechanism", "SCRAM-SHA-256").unwrap();
        c.set(
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="hunter2";"#,
        )
        .unwrap();
        c.set("ssl.ca.location", "/ca.pem").unwrap();
        let c = c.validated().unwrap();
        let security = &c.client_config().connection.security;
        assert_eq!(security.sasl.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(security.tls.ca_location.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            ("acks", "2"),
            ("acks", "ALL"),
            ("acks", ""),
            ("linger.ms", "-1"),
            ("linger.ms", "5ms"),
            ("batch.size", "-1"),
            ("batch.size", "2147483648"),
            ("buffer.memory", "x"),
            ("compression.type", "brotli"),
            ("enable.idempotence", "yes"),
            ("max.in.flight.requests.per.connection", "0"),
            ("delivery.timeout.ms", "2147483648"),
            ("request.timeout.ms", "-5"),
            ("retries", "-1"),
            ("retries", "2147483648"),
            ("retry.backoff.ms", "1.5"),
            ("max.request.size", ""),
            ("partitioner.ignore.keys", "1"),
            ("transactional.id", "  "),
            ("receive.message.max.bytes", "999"),
            ("bootstrap.servers", " , "),
            ("bootstrap.servers", "a:1,b:2,a:1"),
            ("key.serializer", "org.apache.kafka.common.serialization.LongSerializer"),
            ("value.serializer", "com.example.AvroSerializer"),
        ];
        for (key, value) in cases {
            let mut c = ProducerConfig::default();
            let (property, reason) = config_error(c.set(key, value));
            assert_eq!(property, key, "{key}={value}: {reason}");
            assert!(!reason.is_empty());
        }
        // The bad value is in the message.
        let err = ProducerConfig::default().set("acks", "2").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid configuration acks: "2" is not one of 0, 1, -1, all"#);
    }

    #[test]
    fn idempotence_conflicts() {
        let base = || ProducerConfig::new("h:1");

        // Defaulted idempotence is silently disabled by acks != all or retries = 0.
        let c = base().acks(Acks::Leader).validated().unwrap();
        assert!(!c.enable_idempotence);
        let c = base().retries(0).validated().unwrap();
        assert!(!c.enable_idempotence);

        // Explicit idempotence makes the same settings errors.
        let (property, _) = config_error(base().enable_idempotence(true).acks(Acks::None).validated());
        assert_eq!(property, "acks");
        let (property, _) = config_error(base().enable_idempotence(true).retries(0).validated());
        assert_eq!(property, "retries");
        let (property, _) = config_error(ProducerConfig::from_properties([
            ("bootstrap.servers", "h:1"),
            ("enable.idempotence", "true"),
            ("acks", "1"),
        ]));
        assert_eq!(property, "acks");

        // More than 5 in flight is an error with idempotence on, defaulted or not (as in Java).
        let (property, _) = config_error(base().max_in_flight_requests_per_connection(6).validated());
        assert_eq!(property, "max.in.flight.requests.per.connection");
        let c = base().enable_idempotence(false).max_in_flight_requests_per_connection(6).validated().unwrap();
        assert_eq!(c.max_in_flight_requests_per_connection, 6);

        // Transactions need idempotence, including when it was disabled implicitly.
        let (property, _) = config_error(base().transactional_id("t").acks(Acks::Leader).validated());
        assert_eq!(property, "transactional.id");
        let (property, _) = config_error(base().transactional_id("t").enable_idempotence(false).validated());
        assert_eq!(property, "transactional.id");
        assert!(base().transactional_id("t").validated().is_ok());

        // Validation is idempotent.
        let once = base().acks(Acks::Leader).validated().unwrap();
        assert!(!once.validated().unwrap().enable_idempotence);
    }

    #[test]
    fn delivery_timeout_rule() {
        let base =
            || ProducerConfig::new("h:1").linger(Duration::from_secs(1)).request_timeout(Duration::from_secs(60));
        // Explicitly too small: an error.
        let (property, reason) = config_error(base().delivery_timeout(Duration::from_secs(30)).validated());
        assert_eq!(property, "delivery.timeout.ms");
        assert!(reason.contains("61000"), "{reason}");
        // Exactly the sum is fine.
        assert!(base().delivery_timeout(Duration::from_secs(61)).validated().is_ok());
        // Defaulted: raised to the sum.
        let mut c = base();
        c.delivery_timeout = Duration::from_secs(30);
        assert_eq!(c.validated().unwrap().delivery_timeout, Duration::from_secs(61));
        let c =
            ProducerConfig::from_properties([("bootstrap.servers", "h:1"), ("request.timeout.ms", "200000")]).unwrap();
        assert_eq!(c.delivery_timeout, Duration::from_millis(200_005));
    }

    #[test]
    fn wire_limits_checked_on_fields() {
        let mut c = ProducerConfig::new("h:1");
        c.request_timeout = Duration::from_millis(i32::MAX as u64 + 1);
        c.delivery_timeout = Duration::from_secs(u32::MAX as u64);
        assert_eq!(config_error(c.validated()).0, "request.timeout.ms");
        let mut c = ProducerConfig::new("h:1");
        c.max_in_flight_requests_per_connection = 0;
        assert_eq!(config_error(c.validated()).0, "max.in.flight.requests.per.connection");
        let c = ProducerConfig::new("h:1").retries(u32::MAX);
        assert_eq!(config_error(c.validated()).0, "retries");
    }

    #[test]
    fn properties_file() {
        let text = "\
# A producer
! also a comment
   bootstrap.servers = broker1:9092, broker2:9092
client.id:my-app
acks all
linger.ms   =   20

compression.type=gzip
enable.idempotence = false
acks = 1
";
        let c = ProducerConfig::from_properties_text(text).unwrap();
        assert_eq!(c.bootstrap_servers, ["broker1:9092", "broker2:9092"]);
        assert_eq!(c.client_id.as_deref(), Some("my-app"));
        assert_eq!(c.acks, Acks::Leader); // the last one wins
        assert_eq!(c.linger, Duration::from_millis(20));
        assert_eq!(c.compression, Compression::Gzip);
        assert!(!c.enable_idempotence);

        let (property, _) = config_error(ProducerConfig::from_properties_text("bootstrap.servers=h:1\nretries=many\n"));
        assert_eq!(property, "retries");
        let (property, _) =
            config_error(ProducerConfig::from_properties_text("bootstrap.servers=h:1\nbogus.setting=1\n"));
        assert_eq!(property, "bogus.setting");
        let (property, reason) =
            config_error(ProducerConfig::from_properties_text("bootstrap.servers=h:1,\\\n  h:2\n"));
        assert_eq!(property, "bootstrap.servers");
        assert!(reason.contains("continuation"), "{reason}");
        // Required property missing.
        assert_eq!(config_error(ProducerConfig::from_properties_text("# empty\n")).0, "bootstrap.servers");
    }
}
