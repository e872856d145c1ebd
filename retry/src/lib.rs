//! Event-driven pattern 4 on the `kafka-wire` client: schedule-and-forget with blocking and
//! non-blocking retries, retry topics and a dead-letter queue.
//!
//! Empty for now: retries arrive once the consumer does.
