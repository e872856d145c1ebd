//! A tracing subscriber that records the spans opened while it is the default: what an
//! operator's subscriber would see. Install it with [`Spans::install`] in a current-thread
//! runtime, so that the clients' tasks run where it is the default.
//!
//! `tracing` caches whether a callsite is wanted once per process, asking the dispatcher of the
//! thread that reaches it first: a test thread without a subscriber would mark a span "never"
//! for every thread, and a capture installed on another thread would then see nothing.
//! [`Spans::install`] therefore first sets, once per process, a global subscriber that records
//! nothing but answers "sometimes" for every callsite, so the question is asked per span on the
//! thread that opens it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{Event, Metadata, Subscriber};

/// A span's name and its fields as text.
type SpanRecord = (String, BTreeMap<String, String>);

/// The spans opened while it was the default subscriber, by span id.
#[derive(Clone, Default)]
pub struct Spans {
    next_id: Arc<AtomicU64>,
    spans: Arc<Mutex<BTreeMap<u64, SpanRecord>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").trim_matches('"').to_owned());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(id, (span.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Spans {
    /// Makes this the calling thread's default subscriber until the guard is dropped.
    pub fn install(&self) -> DefaultGuard {
        static FLOOR: std::sync::Once = std::sync::Once::new();
        FLOOR.call_once(|| {
            // Another global subscriber set first is as good: it is asked too.
            let _ = tracing::subscriber::set_global_default(Floor);
        });
        tracing::subscriber::set_default(self.clone())
    }

    /// The fields of every span called `name`, in the order they were opened.
    pub fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.spans.lock().unwrap();
        spans.values().filter(|(n, _)| n == name).map(|(_, fields)| fields.clone()).collect()
    }
}

/// The process-wide subscriber behind [`Spans::install`]: wants nothing, and so that `tracing`
/// asks again for every span, answers "sometimes" for every callsite.
struct Floor;

impl Subscriber for Floor {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
