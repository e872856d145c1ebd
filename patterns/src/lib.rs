//! Event-driven patterns 1 and 2 on the `kafka-wire` client: consume-and-project (materialized
//! views) and end-to-end push of job status from Kafka to a browser over a websocket.
//!
//! Empty for now: the patterns arrive once the consumer does.
