//! Event-driven patterns 3 and 6 on the `kafka-wire` client: an in-memory key-value store loaded from
//! a compacted topic, read with no network round trip, written through the topic, and watched
//! for changes by every process that holds a store of the same topic.
//!
//! ```no_run
//! # async fn demo() -> kvstore::Result<()> {
//! use kvstore::{KvConfig, KvStore};
//!
//! // Creates the compacted topic if needed, loads it, and keeps following it.
//! let countries: KvStore<String, String> = KvStore::open(KvConfig::new("127.0.0.1:9092", "countries")).await?;
//! countries.put(&"SS".to_owned(), &"South Sudan".to_owned()).await?;
//! assert_eq!(countries.get("SS")?.as_deref(), Some("South Sudan")); // read-your-writes
//!
//! let mut changes = countries.watch();
//! while let Ok(change) = changes.recv().await {
//!     println!("{}: {:?} -> {:?}", change.key, change.old, change.new);
//! }
//! # Ok(()) }
//! ```
//!
//! See `README.md` for more, and `examples/countries` for the article's scenario.

#![warn(missing_docs)]

mod atomic;
mod atomic_state;
mod atomic_txn;
mod codec;
mod error;
mod store;
mod watch;

pub use atomic::{AtomicConfig, AtomicKvStore, AtomicProcessor, Callback, Command, Function, Outcome, Sent, Update};
pub use atomic_txn::Stop;
pub use codec::{Codec, CodecError, Json, Raw};
pub use error::{Error, Result};
pub use store::{DecodeFailure, KvConfig, KvStore, Prefix, Snapshot, Written};
pub use watch::{Change, Watch, WatchError};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
