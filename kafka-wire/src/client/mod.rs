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

mod cluster;
pub mod config;
mod connection;
mod error;
mod producer;

pub use cluster::{BrokerAddr, Client, ClientConfig};
pub use config::{Acks, ProducerConfig};
pub use connection::{Connection, ConnectionConfig, PendingResponse};
pub use error::{Error, Result};
pub use producer::{DeliveryFuture, Producer, ProducerRecord};
