//! Sans-IO state machines: they take events and the current time as arguments and say what to
//! send; the tokio drivers in [`crate::client`] do the IO. Because nothing here reads a clock or
//! a socket, tests drive them deterministically against model brokers with injected faults.

pub mod assignor;
pub mod backoff;
pub mod consumer_protocol;
pub mod driving;
pub mod fetch_session;
pub mod fetcher;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod read_committed;
pub mod sasl;
pub mod transaction;
