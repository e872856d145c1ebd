//! Event-driven pattern 4, schedule-and-forget, on the handler runtime: a consumer handles a
//! topic's records and retries the ones that fail — in place (blocking: only that partition or
//! key waits), through retry topics with delays (non-blocking: the source partition goes on),
//! and finally to a dead-letter queue that keeps the record with its full history. Nothing is
//! dropped silently.
//!
//! ```no_run
//! use std::time::Duration;
//! use kafka_wire::ConsumerConfig;
//! use retry::{Failed, RetryConfig, RetryPolicy, RetryingConsumer};
//!
//! # async fn demo() -> kafka_wire::Result<()> {
//! // Two quick retries in place, then retry topics after 10 s and 1 min, then the DLQ.
//! let policy = RetryPolicy::blocking([Duration::from_millis(100), Duration::from_millis(500)])
//!     .then_non_blocking([Duration::from_secs(10), Duration::from_secs(60)]);
//! let consumer = ConsumerConfig::new("127.0.0.1:9092").group_id("billing");
//! let renewals = RetryingConsumer::new(RetryConfig::new(consumer, "renewals", policy), |record| async move {
//!     if record.value.is_none() {
//!         return Err(Failed::non_retriable("a renewal without a body")); // straight to the DLQ
//!     }
//!     Ok(()) // charge the card here; an error is retried
//! })
//! .await?;
//! renewals.run_until(tokio::time::sleep(Duration::from_secs(60))).await
//! # }
//! ```

mod consumer;
pub mod control;
pub mod dashboard;
pub mod headers;
pub mod policy;
mod redrive;
pub mod topics;

pub use consumer::{Failed, RetryConfig, RetryingConsumer};
pub use control::{Command, ControlState, RetryControl, RetryStatus};
pub use headers::RetryHeaders;
pub use policy::{Blocking, Failure, RetryPolicy, Route};
pub use redrive::{RedriveFilter, RedriveTarget, Redriven};
pub use topics::TopicNames;

// The README's example compiles against the crate as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
