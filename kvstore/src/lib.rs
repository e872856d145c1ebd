//! Event-driven patterns 3 and 6 on the `kafka-wire` client: an in-memory key-value store loaded
//! from a compacted topic with change subscription, and an atomic store that applies commands
//! exactly once.
//!
//! Empty for now: the store arrives once the consumer does.
