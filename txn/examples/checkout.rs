//! The article's checkout flow (pattern 5, "Events in Transactions"), against a running broker
//! (`KAFKA_BOOTSTRAP`, else 127.0.0.1:9092; `cargo xtask kafka up` starts one):
//!
//! ```text
//!  Payments ──► purchases ──► Checkout (exactly once) ──► checkouts ──► Delivery, Inventory, Invoices
//! ```
//!
//! - Payments writes one "Order Purchase Completed" event per order, JSON with the order id and
//!   the cart items, with the idempotent producer.
//! - Checkout is a transactional [`Processor`]: for each purchase it writes one "Order Checkout
//!   Completed" event with the cart items, committed together with the purchase's offset.
//! - Delivery, Inventory and Invoices consume `checkouts` read_committed, each in its own group,
//!   until they have seen every order of this run; the summary checks each saw every order
//!   exactly once.
//!
//! `cargo run -p txn --example checkout -- [orders]` (default 1000).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_wire::client::{Admin, ClientConfig, Consumer, ConsumerRecord, Error, NewTopic, ProducerRecord};
use kafka_wire::ErrorCode;
use serde_json::{json, Value};
use txn::{Decision, Processor, ProcessorConfig, Shutdown};

const PURCHASES: &str = "purchases";
const CHECKOUTS: &str = "checkouts";
const PARTITIONS: i32 = 3;
/// How long the downstream services wait for this run's orders.
const DEADLINE: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let orders: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1000,
    };
    // The topics outlive a run: this run's orders carry its id, and the services count only them.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis().to_string();
    create_topics(&bootstrap).await?;

    let shutdown = Shutdown::new();
    let checkout = {
        // One Checkout instance, so one fixed transactional.id: a rerun after a crash fences
        // the crashed run's producer and aborts what it left open.
        let config = ProcessorConfig::new(&bootstrap, "checkout", "checkout-1", [PURCHASES]);
        let processor = Processor::new(config).await?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move { processor.run(checkout, &shutdown).await })
    };
    let services: Vec<_> = ["delivery", "inventory", "invoices"]
        .into_iter()
        .map(|name| {
            let (bootstrap, run) = (bootstrap.clone(), run.clone());
            tokio::spawn(async move { (name, downstream(&bootstrap, name, &run, orders).await) })
        })
        .collect();

    payments(&bootstrap, &run, orders).await?;
    println!("payments: {orders} purchases written (run {run})");

    let mut exactly_once = true;
    for service in services {
        let (name, seen) = service.await?;
        let seen = seen?;
        let missing = orders - seen.len() as u64;
        let repeated = seen.values().filter(|s| s.events > 1).count();
        let units: u64 = seen.values().map(|s| s.units).sum();
        let cents: u64 = seen.values().map(|s| s.cents).sum();
        exactly_once &= missing == 0 && repeated == 0;
        println!(
            "{name:>9}: {} orders, {missing} missing, {repeated} seen more than once \
             ({units} units, {}.{:02} billed)",
            seen.len(),
            cents / 100,
            cents % 100
        );
    }
    shutdown.trigger();
    let stats = checkout.await??;
    println!(
        " checkout: {} transactions committed, {} aborted, {} purchases in, {} checkouts out",
        stats.committed, stats.aborted, stats.records_in, stats.records_out
    );
    if !exactly_once {
        return Err("some order was not checked out exactly once".into());
    }
    println!("every order has exactly one checkout");
    Ok(())
}

async fn create_topics(bootstrap: &str) -> Result<(), Error> {
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await?;
    for topic in [PURCHASES, CHECKOUTS] {
        match admin.create_topics(&[NewTopic::new(topic, PARTITIONS, -1)], false).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await;
    Ok(())
}

/// Payments: one "Order Purchase Completed" event per order, keyed by the order id.
async fn payments(bootstrap: &str, run: &str, orders: u64) -> Result<(), Error> {
    let producer = txn::idempotent_producer(bootstrap).await?;
    let mut deliveries = Vec::new();
    for n in 0..orders {
        let order_id = format!("{run}-{n}");
        let items: Vec<Value> = (0..1 + n % 3)
            .map(|i| json!({ "sku": format!("sku-{}", (n + i) % 17), "qty": 1 + i, "price_cents": 499 + 100 * i }))
            .collect();
        let event = json!({ "type": "OrderPurchaseCompleted", "order_id": order_id, "items": items });
        let record = ProducerRecord::new(PURCHASES, event.to_string()).key(order_id);
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await
}

/// Checkout's handler: one "Order Checkout Completed" event with the cart items per purchase.
fn checkout(batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>) -> Decision {
    for r in batch {
        let Some(purchase) = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()) else {
            eprintln!("checkout: skipping a malformed purchase at {}-{}@{}", r.topic, r.partition, r.offset);
            continue;
        };
        let event = json!({
            "type": "OrderCheckoutCompleted",
            "order_id": purchase["order_id"],
            "items": purchase["items"],
        });
        let mut record = ProducerRecord::new(CHECKOUTS, event.to_string());
        record.key = r.key.clone();
        out.push(record);
    }
    Decision::Commit
}

/// What one downstream service did for one order.
#[derive(Default)]
struct Handled {
    events: u32,
    units: u64,
    cents: u64,
}

/// A downstream service: reads `checkouts` read_committed until every order of this run has
/// been seen and it has caught up with the end of the topic (where a duplicate would be).
async fn downstream(bootstrap: &str, name: &str, run: &str, orders: u64) -> Result<BTreeMap<String, Handled>, Error> {
    let consumer = Consumer::new(txn::read_committed_consumer_config(bootstrap, name)).await?;
    consumer.subscribe([CHECKOUTS])?;
    let prefix = format!("{run}-");
    let mut seen: BTreeMap<String, Handled> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ((seen.len() as u64) < orders || !caught_up(&consumer)) && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await? {
            let Some(event) = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()) else {
                continue;
            };
            let Some(order_id) = event["order_id"].as_str().filter(|id| id.starts_with(&prefix)) else { continue };
            let handled = seen.entry(order_id.to_owned()).or_default();
            handled.events += 1;
            for item in event["items"].as_array().into_iter().flatten() {
                let qty = item["qty"].as_u64().unwrap_or(0);
                handled.units += qty;
                handled.cents += qty * item["price_cents"].as_u64().unwrap_or(0);
            }
        }
    }
    consumer.close().await?;
    Ok(seen)
}

fn caught_up(consumer: &Consumer) -> bool {
    let assigned = consumer.assignment();
    !assigned.is_empty() && assigned.iter().all(|tp| consumer.lag(tp) == Some(0))
}
