//! `cargo run --release -p contacts-import --example bench [-- CONTACTS [IMPORTERS [JOB_SIZE
//! [LOOKUP_FAILURES]]]]`: the whole demo's throughput against the broker at `$KAFKA_BOOTSTRAP`
//! (else 127.0.0.1:9092), on topics of its own: contacts imported per second for a generated CSV
//! (100 000 contacts by default), from the POST to the completion event.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use contacts_import::{generate_csv, Demo, DemoConfig};
use kafka_wire::client::{IsolationLevel, OffsetReset};
use kafka_wire::{Consumer, ConsumerConfig, TopicPartition};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUND: Duration = Duration::from_secs(1800);

/// POSTs `csv` to the jobs service; the answer's status and body.
async fn post(addr: SocketAddr, channel: &str, csv: &str) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/imports?channel={channel} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        csv.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(csv.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let contacts: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let importers: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let job_size: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let lookup_failures: f64 = args.next().map_or(Ok(0.05), |a| a.parse())?;
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();

    let mut config = DemoConfig::new(&bootstrap);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.prefix = format!("bench-{millis}-");
    config.importers = importers;
    config.job_size = job_size;
    config.lookup_failures = lookup_failures;
    let demo = Demo::start(config).await?;
    if !demo.importers_assigned(Duration::from_secs(120)).await {
        return Err("the importers were not assigned partitions within 120 s".into());
    }

    // The completion event, read as the gateway reads it.
    let consumer = Consumer::new(
        ConsumerConfig::new(&bootstrap)
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(OffsetReset::Latest),
    )
    .await?;
    let partitions: Vec<TopicPartition> =
        (0..3).map(|p| TopicPartition::new(demo.names().notifications.as_str(), p)).collect();
    consumer.assign(partitions.iter().cloned());
    for tp in &partitions {
        consumer.position(tp).await?;
    }

    let csv = generate_csv(contacts);
    let started = Instant::now();
    let (status, body) = post(demo.addr(), "bench", &csv).await?;
    let accepted_after = started.elapsed();
    if !status.contains(" 202 ") {
        return Err(format!("the import was refused: {status} {body}").into());
    }
    let request = serde_json::from_str::<Value>(&body)?["request"].as_str().unwrap_or_default().to_owned();
    let complete = loop {
        if started.elapsed() > BOUND {
            return Err(format!("no completion within {BOUND:?}").into());
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        let found = records
            .iter()
            .filter_map(|r| r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()))
            .find(|n| n["request"] == request.as_str() && n["type"] == "complete");
        if let Some(n) = found {
            break n;
        }
    };
    let elapsed = started.elapsed();
    let imported = complete["imported"].as_u64().unwrap_or(0);
    println!("contacts-import demo, {importers} importers, jobs of {job_size}, {lookup_failures} of lookups failing");
    println!("  {contacts} contacts in {} jobs: 202 after {accepted_after:?}", complete["total"]);
    println!("  complete after {elapsed:.2?}: {imported} imported, {} rejected", complete["rejected"]);
    println!("  {:.0} contacts/s (POST to completion event)", imported as f64 / elapsed.as_secs_f64());
    consumer.close().await?;
    demo.stop().await;
    Ok(())
}
