//! Projector benchmark (issue #12): `cargo run --release -p patterns --example projector_bench --
//! [bootstrap] [records] [keys]` (defaults 127.0.0.1:9092, 200000, 50000).
//!
//! Writes `records` site snapshots over `keys` sites to a fresh 3-partition topic, then, in the
//! same run: the raw consume rate of the topic (a bare consumer reading it to the end), a
//! projector (the handler runtime, group commits) into the embedded store and into PostgreSQL
//! (`PATTERNS_POSTGRES`, default the local server; skipped if unreachable), and a rebuild (no
//! group, one store transaction per poll) into a fresh embedded store. Prints records/s and
//! CPU seconds for each.

#[path = "../../kafka-wire/examples/support/proc_stats.rs"]
mod proc_stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handler::HandlerError;
use kafka_wire::client::{Admin, NewTopic, OffsetReset};
use kafka_wire::{
    Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use patterns::projector::{rebuild, Projector, ProjectorConfig};
use patterns::view::{EmbeddedStore, PostgresStore, ViewStore};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn installed_apps(_key: &[u8], snapshot: &[u8]) -> Result<Option<Value>, HandlerError> {
    let site: Value = serde_json::from_slice(snapshot)?;
    Ok(Some(json!({ "apps": site["apps"], "revision": site["revision"] })))
}

fn cpu() -> f64 {
    let (u, s) = proc_stats::cpu_seconds("/proc/self/stat");
    u + s
}

fn report(what: &str, records: u64, started: Instant, cpu_before: f64) {
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = cpu() - cpu_before;
    println!(
        "{what:<34} {:>9.0} records/s  ({secs:.2} s, CPU {cpu_s:.2} s = {:.2} CPU s per million)",
        records as f64 / secs,
        cpu_s * 1e6 / records as f64
    );
}

async fn project<S: ViewStore>(bootstrap: &str, topic: &str, store: Arc<S>, end: &BTreeMap<i32, i64>) -> Res<()> {
    let group = format!("{topic}-{}", std::process::id());
    let consumer = ConsumerConfig::new(bootstrap).group_id(&group).auto_offset_reset(OffsetReset::Earliest);
    let mut config = ProjectorConfig::new(consumer, [topic]);
    config.runtime = config.runtime.commit_interval(Duration::from_millis(100));
    let projector = Projector::new(config, store, installed_apps).await?;
    let runtime = projector.runtime().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run_until(async {
        let _ = stopped.await;
    }));
    loop {
        let stats = runtime.stats();
        if end.iter().all(|(p, e)| stats.get(&TopicPartition::new(topic, *p)).and_then(|s| s.committed) >= Some(*e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await??;
    Admin::new(Client::connect(ClientConfig::new(bootstrap)).await?).delete_groups(&[group]).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bootstrap = args.first().cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let records: u64 = args.get(1).map_or(Ok(200_000), |s| s.parse())?;
    let keys: u64 = args.get(2).map_or(Ok(50_000), |s| s.parse())?;

    let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
    let admin = Admin::new(client.clone());
    let topic = format!("projector-bench-{}", std::process::id());
    admin.create_topics(&[NewTopic::new(&topic, 3, 1)], false).await?;
    let producer = Producer::with_client(client.clone(), ProducerConfig::new(&bootstrap))?;
    let mut deliveries = Vec::new();
    for n in 0..records {
        let site = format!("site-{:06}", n % keys);
        let snapshot = json!({ "site": site, "apps": ["stores", "bookings", "blog"], "revision": n / keys });
        let record = ProducerRecord::new(topic.as_str(), snapshot.to_string()).key(site.into_bytes());
        deliveries.push(producer.send(record).await?);
    }
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for d in deliveries {
        let m = d.await?;
        let e = end.entry(m.topic_partition.partition).or_insert(0);
        *e = (*e).max(m.offset + 1);
    }
    producer.close().await?;
    println!("{records} snapshots of {keys} sites on {topic}");

    // The raw consume rate of the same topic.
    let (started, cpu0) = (Instant::now(), cpu());
    let consumer = Consumer::with_client(client.clone(), ConsumerConfig::new(&bootstrap))?;
    let partitions: Vec<TopicPartition> = end.keys().map(|p| TopicPartition::new(topic.as_str(), *p)).collect();
    consumer.assign(partitions.iter().cloned());
    consumer.seek_to_beginning(&partitions)?;
    let mut read = 0u64;
    while read < records {
        read += consumer.poll(Duration::from_millis(500)).await?.len() as u64;
    }
    report("raw consume (bare consumer)", records, started, cpu0);
    consumer.close().await?;

    let dir = std::env::temp_dir().join(&topic);
    std::fs::create_dir_all(&dir)?;
    let (started, cpu0) = (Instant::now(), cpu());
    project(&bootstrap, &topic, Arc::new(EmbeddedStore::open(dir.join("view.redb"))?), &end).await?;
    report("projector -> embedded (redb)", records, started, cpu0);

    let postgres = std::env::var("PATTERNS_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres password=postgres dbname=postgres".into());
    let table = topic.replace('-', "_");
    match PostgresStore::connect(&postgres, &table).await {
        Ok(store) => {
            let (started, cpu0) = (Instant::now(), cpu());
            project(&bootstrap, &topic, Arc::new(store), &end).await?;
            report("projector -> PostgreSQL", records, started, cpu0);
        }
        Err(e) => println!("projector -> PostgreSQL              skipped: {e}"),
    }

    let fresh = EmbeddedStore::open(dir.join("rebuilt.redb"))?;
    let (started, cpu0) = (Instant::now(), cpu());
    let rebuilt = rebuild(ConsumerConfig::new(&bootstrap), &[topic.as_str()], &fresh, installed_apps, 5000).await?;
    report("rebuild -> embedded (no group)", rebuilt.records, started, cpu0);
    println!(
        "rows: {}  max RSS {:.1} MiB  load average {}",
        fresh.count().await?,
        proc_stats::status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0,
        proc_stats::loadavg()
    );

    admin.delete_topics(&[topic.as_str()]).await?;
    std::fs::remove_dir_all(&dir).ok();
    client.close().await;
    Ok(())
}
