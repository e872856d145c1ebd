//! The tokio client: connections to brokers, API version negotiation and cluster metadata.
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::client::Result<()> {
//! use kafka_wire::client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//! let metadata = client.metadata(None).await?;
//! println!("{} brokers, {} topics", metadata.brokers.len(), metadata.topics.len());
//! # Ok(()) }
//! ```

mod admin;
mod cluster;
pub mod config;
mod connection;
mod consumer;
mod consumer_config;
mod consumer_group;
mod error;
mod frame_pool;
pub mod metrics;
mod partition_streams;
mod producer;
mod record_views;
mod router;
mod sasl;
mod tls;
mod topic_name;
mod transaction;
mod transport;

/// Where an acknowledged record landed: what a [`DeliveryFuture`] resolves to.
pub use crate::proto::producer::RecordMetadata;
pub use admin::{
    Admin, AlterConfigOp, AlterConfigOpType, ClusterDescription, ConfigEntry, ConfigResource, ConfigResourceType,
    ConfigSource, ConfigSynonym, ConsumerGroupDescription, ConsumerGroupMember, CoordinatorType, CreatedTopic,
    DeletedRecords, GroupDescription, GroupListing, GroupOffset, ListedOffset, MemberDescription, NewTopic, OffsetSpec,
    PartitionMetadata, ResourceConfig, TopicMetadata, TopicPartitions, TransactionDescription, TransactionFilter,
    TransactionListing,
};
pub use cluster::{BrokerAddr, Client, ClientConfig};
pub use config::{Acks, ProducerConfig};
pub use connection::{Connection, ConnectionConfig, PendingResponse};
pub use consumer::stream;
pub use consumer::{Consumer, ConsumerRecord, OffsetAndMetadata, RebalanceListener, ResetTo};
pub use consumer_config::{ConsumerConfig, GroupProtocol, IsolationLevel, OffsetReset};
pub use error::{Error, ErrorKind, Result};
pub use metrics::{BrokerMetrics, ClientMetrics, Latency, ProducerMetrics};
pub use partition_streams::{PartitionStream, PartitionStreams};
pub use producer::{DeliveryFuture, Producer, ProducerRecord, TopicProducer, TrySend, WaitingSend};
pub use record_views::{PolledRecords, RecordView, RecordViews};
pub use sasl::{
    OAuthBearerToken, Password, SaslConfig, SaslMechanism, TokenFuture, TokenProvider, Tokens, UnsecuredTokenProvider,
};
pub use tls::TlsConfig;
pub use topic_name::TopicName;
pub use transaction::ConsumerGroupMetadata;
pub use transport::{BoxStream, DialFuture, Dialer, SecurityConfig, SecurityProtocol, Stream};

/// `items` grouped by topic, topics in the order they first appear: a request lists each topic
/// once, with its partitions.
fn by_topic<T>(items: impl IntoIterator<Item = (std::sync::Arc<str>, T)>) -> Vec<(std::sync::Arc<str>, Vec<T>)> {
    let mut topics: Vec<(std::sync::Arc<str>, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, items)) => items.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
}
