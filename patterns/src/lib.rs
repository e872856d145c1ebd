//! Event-driven patterns 1 and 2 on the `kafka-wire` client: consume-and-project (materialized
//! views) and end-to-end push of job status from Kafka to a browser over a websocket.
//!
//! - [`projector`]: pattern 1, a consumer that projects a topic of entity snapshots into a
//!   view store ([`view`]: embedded or PostgreSQL), idempotently, served read-only over HTTP.
//! - [`gateway`]: pattern 2, a websocket gateway that pushes the notifications services publish
//!   to Kafka to the browsers waiting on their channel, with resume after a reconnect.

pub mod gateway;
pub mod projector;
pub mod view;

// The README's examples compile against the crate as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
