//! An idle group member does not spin: a `poll` with nothing to read waits for data without
//! the driver and the poll waking each other. (They did: every driver step woke every poll,
//! and every poll woke the driver, about 17 000 times a second, using a core while idle.) The
//! bound is on CPU time, not on speed: a member that waits uses next to none, one that spins
//! uses about as much as the wall time.

use std::time::Duration;

use kafka_wire::client::{Client, ClientConfig, OffsetReset};
use kafka_wire::{Consumer, ConsumerConfig};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic};

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_member_polling_uses_next_to_no_cpu() {
    let topic = unique_topic("idle");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, 2, 1, &[]).await;
    let config =
        ConsumerConfig::new(&bootstrap()).group_id(unique_topic("idle-group")).auto_offset_reset(OffsetReset::Earliest);
    let consumer = Consumer::new(config).await.unwrap();
    consumer.subscribe([topic.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumer.assignment().is_empty()
        || consumer.position(&kafka_wire::TopicPartition::new(topic.as_str(), 0)).await.is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "no assignment");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    let before = cpu_seconds();
    let records = consumer.poll(Duration::from_secs(3)).await.unwrap();
    let used = cpu_seconds() - before;
    assert!(records.is_empty());
    assert!(used < 0.5, "3 s of idle polling used {used:.2} s of CPU: the member spins (one that waits uses ~0.01 s)");
    consumer.close().await.unwrap();
}
