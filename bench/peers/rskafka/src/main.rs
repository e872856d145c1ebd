//! The rskafka peer of `cargo xtask bench`: produce or consume with the settings the harness
//! names (see `../common/args.rs`). rskafka has no idempotent producer: it produces with
//! acks=all, a linger and a batch size per partition (its `BatchProducer`), one task per record.

#[path = "../../common/args.rs"]
mod args;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::BatchProducerBuilder;
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

/// Records in flight at most (the tasks awaiting their acknowledgement).
const IN_FLIGHT: usize = 200_000;

fn compression(name: &str) -> Compression {
    match name {
        "none" => Compression::NoCompression,
        "gzip" => Compression::Gzip,
        "lz4" => Compression::Lz4,
        "snappy" => Compression::Snappy,
        "zstd" => Compression::Zstd,
        other => panic!("unknown compression {other}"),
    }
}

#[tokio::main]
async fn main() {
    let a = match args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rskafka peer: {e}");
            std::process::exit(2);
        }
    };
    let client = ClientBuilder::new(vec![a.bootstrap.clone()]).build().await.expect("connect");
    let partitions = client
        .list_topics()
        .await
        .expect("metadata")
        .into_iter()
        .find(|t| t.name == a.topic)
        .map(|t| t.partitions.len() as i32)
        .expect("topic exists");
    let mut clients = Vec::new();
    for p in 0..partitions {
        let c = client.partition_client(a.topic.clone(), p, UnknownTopicHandling::Retry).await.expect("partition");
        clients.push(Arc::new(c));
    }
    match a.mode.as_str() {
        "produce" => {
            let producers: Vec<_> = clients
                .iter()
                .map(|c| {
                    Arc::new(
                        BatchProducerBuilder::new(Arc::clone(c))
                            .with_linger(Duration::from_millis(a.linger_ms))
                            .with_compression(compression(&a.compression))
                            .build(RecordAggregator::new(a.batch_size)),
                    )
                })
                .collect();
            let values = args::values(a.value_size);
            let start = Instant::now();
            let mut pending = VecDeque::new();
            for i in 0..a.records {
                let producer = Arc::clone(&producers[i as usize % producers.len()]);
                let record = Record {
                    key: None,
                    value: Some(values[i as usize % values.len()].clone()),
                    headers: Default::default(),
                    timestamp: chrono_now(),
                };
                pending.push_back(tokio::spawn(async move { producer.produce(record).await }));
                while pending.len() > IN_FLIGHT {
                    pending.pop_front().expect("non-empty").await.expect("task").expect("produce");
                }
            }
            for t in pending {
                t.await.expect("task").expect("produce");
            }
            println!("{{\"records\":{},\"secs\":{}}}", a.records, start.elapsed().as_secs_f64());
        }
        "consume" => {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for c in clients {
                tasks.push(tokio::spawn(async move {
                    let end = c.get_offset(OffsetAt::Latest).await.expect("end offset");
                    let (mut offset, mut read) = (c.get_offset(OffsetAt::Earliest).await.expect("start offset"), 0u64);
                    while offset < end {
                        let (records, _) = c.fetch_records(offset, 1..52_428_800, 500).await.expect("fetch");
                        if let Some(last) = records.last() {
                            offset = last.offset + 1;
                        }
                        read += records.len() as u64;
                    }
                    read
                }));
            }
            let mut read = 0;
            for t in tasks {
                read += t.await.expect("task");
            }
            assert!(read >= a.records, "read {read} of {}", a.records);
            println!("{{\"records\":{read},\"secs\":{}}}", start.elapsed().as_secs_f64());
        }
        other => {
            eprintln!("rskafka peer: mode {other} is not supported");
            std::process::exit(2);
        }
    }
}

fn chrono_now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    rskafka::chrono::DateTime::from_timestamp_millis(ms).expect("a valid timestamp")
}
