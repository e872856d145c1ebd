//! Per-partition streams against the running broker: each partition's records arrive on their
//! own stream in offset order, a partition whose worker does not read is paused in the consumer
//! (it is not drained into memory) while the others flow, and a partition that leaves the
//! assignment ends its stream.

use std::time::Duration;

use kafka_wire::client::stream::next;
use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, PartitionStream, PartitionStreams, Producer,
    ProducerConfig, ProducerRecord,
};
use kafka_wire::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic, wait_until};
use tokio::sync::mpsc;

const BOUND: Duration = Duration::from_secs(30);

async fn topic_with_records(partitions: i32, per_partition: u32) -> String {
    let topic = unique_topic("partition-streams");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, partitions, 1, &[]).await;
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut deliveries = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let record = ProducerRecord::new(&topic, format!("{p}-{i}").into_bytes()).partition(p);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for d in deliveries {
        d.await.unwrap();
    }
    topic
}

async fn consumer(max_poll_records: usize) -> Consumer {
    let config =
        ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Earliest).max_poll_records(max_poll_records);
    Consumer::new(config).await.unwrap()
}

/// Polls the splitter in a task and hands each new partition stream to the test.
fn run_splitter(splitter: PartitionStreams) -> mpsc::UnboundedReceiver<(TopicPartition, PartitionStream)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut splitter = splitter;
        while let Some(item) = next(&mut splitter).await {
            if tx.send(item.expect("splitter")).is_err() {
                return;
            }
        }
    });
    rx
}

async fn streams(
    rx: &mut mpsc::UnboundedReceiver<(TopicPartition, PartitionStream)>,
    n: usize,
) -> Vec<(TopicPartition, PartitionStream)> {
    let mut out = Vec::new();
    while out.len() < n {
        let s = tokio::time::timeout(BOUND, rx.recv()).await.expect("a stream per assigned partition").unwrap();
        out.push(s);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Reads `count` records of partition `p` and checks they are that partition's, in order.
async fn read_in_order(p: i32, stream: &mut PartitionStream, from: u32, count: u32) {
    for i in from..from + count {
        let record = tokio::time::timeout(BOUND, next(stream))
            .await
            .unwrap_or_else(|_| panic!("partition {p}: record {i} did not arrive"))
            .unwrap_or_else(|| panic!("partition {p}: the stream ended at record {i}"));
        assert_eq!(record.partition, p);
        assert_eq!(record.value.as_deref().unwrap(), format!("{p}-{i}").as_bytes(), "partition {p} out of order");
        assert_eq!(record.offset, i as i64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_partition_is_paused_while_the_others_flow_in_order() {
    const PER_PARTITION: u32 = 2_000;
    const CAPACITY: usize = 50;
    const MAX_POLL: usize = 100;
    let topic = topic_with_records(3, PER_PARTITION).await;
    let consumer = consumer(MAX_POLL).await;
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(topic.as_str(), p)).collect();
    consumer.assign(tps.clone());
    let mut rx = run_splitter(PartitionStreams::new(consumer.clone(), CAPACITY));
    let mut streams = streams(&mut rx, 3).await;
    assert_eq!(streams.iter().map(|(tp, _)| tp.clone()).collect::<Vec<_>>(), tps);

    // Partition 0's worker reads nothing yet; the other two read everything.
    for (tp, stream) in &mut streams[1..] {
        read_in_order(tp.partition, stream, 0, PER_PARTITION).await;
    }
    wait_until("partition 0 paused by the splitter", BOUND, || consumer.paused().contains(&tps[0])).await;
    let handed_out = consumer.position(&tps[0]).await.unwrap();
    assert!(
        handed_out <= (CAPACITY + MAX_POLL) as i64,
        "partition 0 was drained into its queue ({handed_out} records) instead of being paused"
    );

    // Its worker catches up: the partition is resumed and its records follow in order.
    read_in_order(0, &mut streams[0].1, 0, PER_PARTITION).await;
    wait_until("partition 0 resumed once its queue is empty", BOUND, || !consumer.paused().contains(&tps[0])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leaving_the_assignment_ends_its_stream_and_a_new_one_gets_a_stream() {
    let topic = unique_topic("partition-streams-assign");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, 3, 1, &[]).await;
    let consumer = consumer(500).await;
    let tp = |p| TopicPartition::new(topic.as_str(), p);
    consumer.assign([tp(0), tp(1)]);
    let mut rx = run_splitter(PartitionStreams::new(consumer.clone(), 100));
    let mut first = streams(&mut rx, 2).await;

    consumer.assign([tp(1), tp(2)]);
    let ended = tokio::time::timeout(BOUND, next(&mut first[0].1)).await.expect("partition 0's stream did not end");
    assert!(ended.is_none(), "partition 0 is no longer assigned, yet its stream handed out a record");
    let (new_tp, mut new_stream) = streams(&mut rx, 1).await.remove(0);
    assert_eq!(new_tp, tp(2));

    // The partitions that stay, and the new one, keep flowing.
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    for p in [1, 2] {
        producer
            .send(ProducerRecord::new(&topic, format!("{p}-0").into_bytes()).partition(p))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    read_in_order(1, &mut first[1].1, 0, 1).await;
    read_in_order(2, &mut new_stream, 0, 1).await;
}

/// Records the order of what a rebalance listener saw, for the eager-rebalance test.
struct SeenAtRevoke(
    std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
    std::sync::Arc<std::sync::Mutex<Option<PartitionStream>>>,
);

impl kafka_wire::client::RebalanceListener for SeenAtRevoke {
    fn on_partitions_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // The listener runs after the revoked partitions' streams ended.
            let stream = self.1.lock().unwrap().take();
            if let Some(mut stream) = stream {
                let ended = matches!(futures_poll_once(&mut stream), std::task::Poll::Ready(None));
                self.0.lock().unwrap().push(ended);
            }
        })
    }
}

fn futures_poll_once(stream: &mut PartitionStream) -> std::task::Poll<Option<kafka_wire::ConsumerRecord>> {
    use kafka_wire::client::stream::Stream;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(stream).poll_next(&mut cx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eager_rebalance_ends_every_stream_and_the_partitions_kept_get_new_ones() {
    let topic = topic_with_records(2, 10).await;
    let group = unique_topic("partition-streams-group");
    let config = || {
        ConsumerConfig::new(&bootstrap())
            .group_id(group.as_str())
            .assignment_strategy(&["range"])
            .auto_offset_reset(OffsetReset::Earliest)
    };
    let a = Consumer::new(config()).await.unwrap();
    a.subscribe([topic.as_str()]).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watched = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut rx =
        run_splitter(PartitionStreams::with_listener(a.clone(), 100, SeenAtRevoke(seen.clone(), watched.clone())));
    let mut first = streams(&mut rx, 2).await;
    read_in_order(0, &mut first[0].1, 0, 10).await;
    read_in_order(1, &mut first[1].1, 0, 10).await;
    a.commit().await.unwrap();
    let (_, p1) = first.pop().unwrap();
    *watched.lock().unwrap() = Some(p1);

    // A second member: the eager (range) rebalance revokes both of A's partitions, then gives
    // one back.
    let b = Consumer::new(config()).await.unwrap();
    b.subscribe([topic.as_str()]).unwrap();
    let b_polls = tokio::spawn(async move {
        loop {
            let _ = b.poll(Duration::from_millis(200)).await;
        }
    });
    let ended = tokio::time::timeout(BOUND, next(&mut first[0].1)).await.expect("partition 0's stream did not end");
    assert!(ended.is_none(), "a revoked partition's stream handed out a record");
    let (kept, mut again) = streams(&mut rx, 1).await.remove(0);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[true],
        "the revoked partition's stream had not ended when the listener ran"
    );
    // The new stream starts from the committed offset: nothing more to read until new records.
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let value = format!("{}-10", kept.partition).into_bytes();
    producer.send(ProducerRecord::new(&topic, value).partition(kept.partition)).await.unwrap().await.unwrap();
    read_in_order(kept.partition, &mut again, 10, 1).await;
    b_polls.abort();
}
