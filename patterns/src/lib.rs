//! Event-driven patterns 1 and 2 on the `kafka-wire` client: consume-and-project (materialized
//! views) and end-to-end push of job status from Kafka to a browser over a websocket.
//!
//! - [`gateway`]: pattern 2, a websocket gateway that pushes the notifications services publish
//!   to Kafka to the browsers waiting on their channel, with resume after a reconnect.

pub mod gateway;
