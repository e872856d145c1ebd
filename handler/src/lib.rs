//! The handler runtime the pattern crates share: a consumer group member that runs an async
//! handler on every record, one worker per partition (in order, or keys in parallel with each
//! key in order), pauses a partition whose worker falls behind while it keeps polling, and
//! commits what was handled — periodically, after draining a revoked partition, and at
//! shutdown — or, in the exactly-once mode, writes each batch's outputs and commits its offsets
//! in one Kafka transaction.
//!
//! ```no_run
//! use handler::{HandlerError, Runtime, RuntimeConfig};
//! use kafka_wire::{ConsumerConfig, ConsumerRecord};
//!
//! # async fn demo() -> kafka_wire::Result<()> {
//! let consumer = ConsumerConfig::new("127.0.0.1:9092").group_id("renewals");
//! let runtime = Runtime::new(RuntimeConfig::new(consumer, ["renewal-requests"]), |record: ConsumerRecord| async move {
//!     println!("renewing {:?}", record.key);
//!     Ok::<(), HandlerError>(())
//! })
//! .await?;
//! // Runs for a minute, then drains, commits and leaves the group.
//! runtime.run_until(tokio::time::sleep(std::time::Duration::from_secs(60))).await
//! # }
//! ```
//!
//! The exactly-once mode ([`Runtime::exactly_once`]): a partition's records come in batches, and
//! what a batch yields is written in the transaction that commits the batch's offsets.
//!
//! ```no_run
//! use handler::{ExactlyOnceConfig, HandlerError, Outputs, Runtime, RuntimeConfig};
//! use kafka_wire::{ConsumerConfig, ConsumerRecord, ProducerConfig, ProducerRecord};
//!
//! # async fn demo() -> kafka_wire::Result<()> {
//! let consumer = ConsumerConfig::new("127.0.0.1:9092").group_id("checkout");
//! let producer = ProducerConfig::new("127.0.0.1:9092").transactional_id("checkout-1");
//! let config = RuntimeConfig::new(consumer, ["purchases"]);
//! let runtime = Runtime::exactly_once(config, ExactlyOnceConfig::new(producer), |batch: Vec<ConsumerRecord>| async move {
//!     let checkouts = batch.iter().map(|r| ProducerRecord::new("checkouts", r.value.clone().unwrap_or_default())).collect();
//!     Ok::<_, HandlerError>(Outputs::commit(checkouts))
//! })
//! .await?;
//! runtime.run_until(tokio::time::sleep(std::time::Duration::from_secs(60))).await
//! # }
//! ```

mod exactly_once;
mod lifecycle;
mod runtime;
mod schedule;

pub use exactly_once::{BatchHandler, Decision, ExactlyOnceConfig, Outputs, TransactionStats};
pub use lifecycle::Lifecycle;
pub use runtime::{Handler, HandlerError, PartitionStats, Runtime, RuntimeConfig};
