//! Apache Kafka's binary protocol and client, in pure Rust.
//!
//! Three layers, each depending only on the one before it:
//!
//! - [`codec`]: bytes ↔ types. Every request and response the client speaks, described once in
//!   `schema/*.msg` and generated into Rust by `cargo xtask codegen`; record batches v2 and their
//!   compression codecs. No IO.
//! - `proto`: sans-IO state machines (producer accumulator and sequences, group membership,
//!   transactions); time comes in as an argument.
//! - [`client`]: tokio drivers and the public API: connections, version negotiation, metadata.
//!
//! Applications and the pattern crates use the public surface: the clients re-exported here and
//! the value types of [`types`]. Paths under `codec` and `proto` are the implementation's.

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod proto;
pub mod types;

pub use client::{
    Admin, BrokerMetrics, Client, ClientConfig, ClientMetrics, Consumer, ConsumerConfig, ConsumerGroupMetadata,
    ConsumerRecord, DeliveryFuture, Error, ErrorKind, OffsetAndMetadata, PartitionStream, PartitionStreams,
    PolledRecords, Producer, ProducerConfig, ProducerMetrics, ProducerRecord, RecordMetadata, RecordView, Result,
};
pub use types::{Compression, ErrorCode, Header, Headers, TimestampType, TopicName, TopicPartition};

// The README's examples compile against the public surface as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
