//! A leader change while consuming, on the 3-node cluster (`cargo xtask kafka up --nodes 3`; the
//! test skips loudly when it is not up): the broker leading most partitions is killed and
//! restarted mid-read, and every record is still read exactly once, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::{create_topic, partition_leaders};
use kafka_wire_tests::{
    cluster3_for, kafka_node_kill, kafka_node_running, kafka_node_start, unique_topic, RestartOnDrop,
};

const PARTITIONS: i32 = 3;
const N: i64 = 150_000;

#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_while_consuming_skips_and_repeats_nothing() {
    let Some((bs, _exclusive)) = cluster3_for("consumer_failover") else { return };
    let client = Client::connect(ClientConfig::new(&bs)).await.unwrap();
    let topic = unique_topic("cfailover");
    create_topic(&client, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]).await;
    let producer = Producer::new(ProducerConfig::new(&bs)).await.unwrap();
    let mut acks = Vec::with_capacity(N as usize);
    for i in 0..N {
        let r = ProducerRecord::new(&topic, i.to_string()).partition((i % i64::from(PARTITIONS)) as i32);
        acks.push(producer.send(r).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    producer.close().await.unwrap();

    let (_, leaders) = partition_leaders(&client, &topic).await;
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for l in leaders.values() {
        *led.entry(*l).or_default() += 1;
    }
    let victim = led.iter().max_by_key(|(_, c)| **c).map(|(id, _)| u8::try_from(*id).unwrap()).unwrap();

    // A small prefetch, so that most of the topic is fetched after the kill, from new leaders.
    let mut config = ConsumerConfig::new(&bs).auto_offset_reset(OffsetReset::Earliest).max_poll_records(200);
    config.prefetch_max_bytes = 32 * 1024;
    config.max_partition_fetch_bytes = 8 * 1024;
    let consumer = Consumer::new(config).await.unwrap();
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)));
    let mut next = vec![0i64; PARTITIONS as usize];
    let mut read = 0i64;
    let mut killed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while read < N {
        assert!(tokio::time::Instant::now() < deadline, "stalled at {read} of {N}: next offsets {next:?}");
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let p = r.partition as usize;
            assert_eq!(r.offset, next[p], "partition {p}: a record skipped or repeated");
            let v: i64 = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
            assert_eq!(v % i64::from(PARTITIONS), r.partition as i64);
            next[p] += 1;
            read += 1;
        }
        if killed.is_none() && read >= N / 4 {
            kafka_node_kill(victim);
            killed = Some(RestartOnDrop(victim));
        }
        if killed.is_some() && read >= N / 2 && !kafka_node_running(victim) {
            tokio::task::spawn_blocking(move || kafka_node_start(victim)).await.unwrap();
        }
    }
    assert_eq!(next, vec![N / i64::from(PARTITIONS); PARTITIONS as usize]);
    assert!(consumer.poll(Duration::from_millis(500)).await.unwrap().is_empty(), "nothing past the end");
    consumer.close().await.unwrap();
}
