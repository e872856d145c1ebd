//! Every request the client sends is a `kafka.request` span carrying the API, its version, the
//! broker, the correlation id and the outcome: what an operator's tracing subscriber sees.

#[path = "support/fake_broker.rs"]
mod fake_broker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kafka_wire::{Client, ClientConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span's name and its fields as text.
type SpanRecord = (String, BTreeMap<String, String>);

/// The spans opened while it was the default subscriber, by span id.
#[derive(Clone, Default)]
struct Spans {
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

#[tokio::test]
async fn each_request_is_a_span_with_api_version_broker_correlation_id_and_outcome() {
    let spans = Spans::default();
    let _default = tracing::subscriber::set_default(spans.clone());
    let broker = fake_broker::FakeBroker::start(&[("t", 1)]).await;
    let client = Client::connect(ClientConfig::new(broker.addr())).await.expect("connect to the fake broker");
    client.metadata(Some(&["t"])).await.expect("metadata");

    let requests: Vec<BTreeMap<String, String>> = spans
        .spans
        .lock()
        .unwrap()
        .values()
        .filter(|(name, _)| name == "kafka.request")
        .map(|(_, fields)| fields.clone())
        .collect();
    let apis: Vec<&str> = requests.iter().map(|f| f["api"].as_str()).collect();
    assert!(apis.contains(&"ApiVersions") && apis.contains(&"Metadata"), "request spans: {requests:?}");
    for fields in &requests {
        for key in ["version", "broker", "correlation_id"] {
            assert!(fields.contains_key(key), "{key} missing from {fields:?}");
        }
        assert_eq!(fields["broker"], broker.addr(), "{fields:?}");
        assert_eq!(fields.get("outcome").map(String::as_str), Some("answered"), "{fields:?}");
    }
    let ids: std::collections::BTreeSet<&str> = requests.iter().map(|f| f["correlation_id"].as_str()).collect();
    assert!(ids.len() >= 2, "requests on one connection have distinct correlation ids: {requests:?}");
}
