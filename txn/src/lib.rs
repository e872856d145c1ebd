//! Event-driven pattern 5 on the `kafka-wire` client: exactly-once consume-transform-produce.
//!
//! Empty for now: the processor arrives with the transactional producer.
