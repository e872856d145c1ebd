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
mod connection;
mod error;

pub use cluster::{BrokerAddr, Client, ClientConfig};
pub use connection::{Connection, ConnectionConfig};
pub use error::{Error, Result};
