//! Event-driven pattern 5, "Events in Transactions", on the `kafka-wire` client: exactly-once
//! consume-transform-produce.
//!
//! ```text
//!  Payments ──idempotent──► purchases ──► Checkout ─────────────► checkouts ──► Delivery
//!  (acks=all, no dups)                    [Processor]                       ├─► Inventory
//!                                         one transaction per batch:        └─► Invoices
//!                                         output records + input offsets        (read_committed)
//! ```
//!
//! - The first producer of a flow only needs to write each event once:
//!   [`idempotent_producer`] (acks=all, idempotence on) lets the broker drop the duplicates its
//!   retries would otherwise create.
//! - Every service that consumes and produces runs a [`Processor`] (the handler runtime's
//!   exactly-once mode): it consumes with isolation read_committed, opens a transaction, sends
//!   what the [`Handler`] made of a batch, puts the batch's input offsets into the same
//!   transaction (KIP-447) and commits. The
//!   outputs and the input progress become visible together or not at all, so downstream
//!   read_committed consumers see each event exactly once, whatever crashes in between.
//! - [`transact`] wraps a one-off atomic write to several topics in a closure.

mod processor;
mod transact;

use kafka_wire::client::{Acks, ConsumerConfig, IsolationLevel, OffsetReset, Producer, ProducerConfig, Result};

pub use processor::{Decision, Handler, Processor, ProcessorConfig, Shutdown, Stats};
pub use transact::{transact, Tx};

/// The configuration of the first producer of a flow (the article's Payments service):
/// `acks=all` and idempotence set explicitly, so that a setting conflicting with them is an error
/// instead of silently turning idempotence off.
pub fn idempotent_producer_config(bootstrap: &str) -> ProducerConfig {
    ProducerConfig::new(bootstrap).acks(Acks::All).enable_idempotence(true)
}

/// Connects an [`idempotent_producer_config`] producer.
pub async fn idempotent_producer(bootstrap: &str) -> Result<Producer> {
    Producer::new(idempotent_producer_config(bootstrap)).await
}

/// Connects a producer with a `transactional.id` and registers it as that id's owner
/// (`init_transactions`): an older instance with the same id is fenced and the transaction it
/// left open is aborted.
pub async fn transactional_producer(config: ProducerConfig) -> Result<Producer> {
    let producer = Producer::new(config).await?;
    producer.init_transactions().await?;
    Ok(producer)
}

/// The configuration of a downstream consumer of transactional output (Delivery, Inventory,
/// Invoices): isolation read_committed, so records of open and aborted transactions are never
/// handed out, starting from the earliest offset when the group has none committed.
pub fn read_committed_consumer_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig::new(bootstrap)
        .group_id(group)
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest)
}
