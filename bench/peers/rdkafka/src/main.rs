//! The librdkafka peer of `cargo xtask bench`: produce, consume or measure end-to-end latency
//! through the `rdkafka` crate, with the settings the harness names (see `../common/args.rs`).

#[path = "../../common/args.rs"]
mod args;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}
impl ClientContext for Counts {}
impl ProducerContext for Counts {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn producer(a: &args::Args) -> BaseProducer<Counts> {
    ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", a.linger_ms.to_string())
        .set("batch.size", a.batch_size.to_string())
        .set("compression.type", &a.compression)
        // The same buffered bytes as the other clients (buffer.memory's 32 MiB): librdkafka
        // bounds its queue at 100 000 messages by default, 10 MB of 100 B records; with the
        // message cap raised, its byte cap binds.
        .set("queue.buffering.max.kbytes", "32768")
        .set("queue.buffering.max.messages", "10000000")
        .create_with_context(Counts::default())
        .expect("producer config")
}

fn consumer(a: &args::Args) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", format!("bench-rdkafka-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer config");
    let metadata = consumer.fetch_metadata(Some(&a.topic), Duration::from_secs(30)).expect("metadata");
    let mut list = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        list.add_partition_offset(&a.topic, p.id(), Offset::Beginning).expect("partition");
    }
    consumer.assign(&list).expect("assign");
    consumer
}

/// Reads `n` records the way librdkafka is fastest used: `rd_kafka_consume_batch_queue` on the
/// consumer's queue, up to 10 000 messages a call (the rdkafka crate's `BaseConsumer::poll`
/// hands out one message per call, with an `Arc` and a clock read each: 0.33 M/s where kcat
/// reads 1.8 M/s). Each message's value is touched (its length summed), as the other clients'
/// consumers do. Returns the records read.
fn consume_batches(c: &BaseConsumer, n: u64) -> u64 {
    use rdkafka::bindings as rd;
    const BATCH: usize = 10_000;
    let mut messages: Vec<*mut rd::rd_kafka_message_t> = vec![std::ptr::null_mut(); BATCH];
    let (mut read, mut bytes) = (0u64, 0u64);
    // SAFETY: the queue belongs to the consumer, which outlives this function; every message
    // batch_queue returns is read, then destroyed once, before the next call.
    unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(c.client().native_ptr());
        assert!(!queue.is_null(), "the consumer has no queue");
        let mut idle = Instant::now();
        while read < n {
            let got = rd::rd_kafka_consume_batch_queue(queue, 1000, messages.as_mut_ptr(), BATCH);
            assert!(got >= 0, "rd_kafka_consume_batch_queue failed");
            if got == 0 {
                assert!(idle.elapsed() < Duration::from_secs(30), "no record for 30 s after {read}");
                continue;
            }
            idle = Instant::now();
            for &m in &messages[..got as usize] {
                if (*m).err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    read += 1;
                    bytes += (*m).len as u64;
                } else {
                    eprintln!("consume: error {:?}", (*m).err);
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    std::hint::black_box(bytes);
    read
}

/// Sends `n` records (paced at `rate` per second when given), returns the time taken until all
/// were acknowledged.
fn produce(a: &args::Args, rate: Option<u64>) -> Duration {
    let p = producer(a);
    let values = args::values(a.value_size);
    if rate.is_none() {
        // Warm up as this library's produce_bench does: metadata and the producer id, untimed.
        p.send(BaseRecord::<(), [u8]>::to(&a.topic).payload(&values[0][..])).map_err(|(e, _)| e).expect("warm-up");
        p.flush(Duration::from_secs(30)).expect("warm-up flush");
        p.context().ok.store(0, Ordering::Relaxed);
    }
    let start = Instant::now();
    let mut value = vec![0u8; a.value_size.max(16)];
    for i in 0..a.records {
        if let Some(rate) = rate {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            p.poll(Duration::ZERO);
            value[..8].copy_from_slice(&args::now_nanos().to_le_bytes());
            value[8..16].copy_from_slice(&i.to_le_bytes());
        } else {
            let v = &values[i as usize % values.len()];
            value.truncate(0);
            value.extend_from_slice(v);
        }
        loop {
            match p.send(BaseRecord::<(), [u8]>::to(&a.topic).payload(&value[..])) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        if i % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    let took = start.elapsed();
    let c = p.context();
    let (ok, failed) = (c.ok.load(Ordering::Relaxed), c.failed.load(Ordering::Relaxed));
    assert!(ok == a.records && failed == 0, "{ok} acknowledged, {failed} failed of {}", a.records);
    took
}

fn main() {
    let a = match args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rdkafka peer: {e}");
            std::process::exit(2);
        }
    };
    match a.mode.as_str() {
        "produce" => {
            let took = produce(&a, None);
            println!("{{\"records\":{},\"secs\":{}}}", a.records, took.as_secs_f64());
        }
        "consume" => {
            let c = consumer(&a);
            let start = Instant::now();
            let read = consume_batches(&c, a.records);
            println!("{{\"records\":{read},\"secs\":{}}}", start.elapsed().as_secs_f64());
        }
        "latency" => {
            let c = consumer(&a);
            let n = a.records;
            let warm_up = a.rate.min(n / 4);
            let reader = std::thread::spawn(move || {
                let (mut nanos, mut read) = (Vec::with_capacity(n as usize), 0);
                while read < n {
                    match c.poll(Duration::from_secs(30)) {
                        Some(Ok(m)) => {
                            let v = m.payload().expect("value");
                            let sent = u64::from_le_bytes(v[..8].try_into().expect("16 bytes"));
                            let index = u64::from_le_bytes(v[8..16].try_into().expect("16 bytes"));
                            read += 1;
                            if index >= warm_up {
                                nanos.push(args::now_nanos().saturating_sub(sent));
                            }
                        }
                        Some(Err(e)) => eprintln!("poll: {e}"),
                        None => panic!("no record for 30 s after {read}"),
                    }
                }
                nanos
            });
            let took = produce(&a, Some(a.rate));
            let (p50, p99, p999) = args::percentiles_ms(reader.join().expect("reader"));
            println!(
                "{{\"records\":{n},\"secs\":{},\"p50_ms\":{p50},\"p99_ms\":{p99},\"p999_ms\":{p999}}}",
                took.as_secs_f64()
            );
        }
        other => {
            eprintln!("rdkafka peer: unknown mode {other}");
            std::process::exit(2);
        }
    }
}
