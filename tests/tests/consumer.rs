//! The consumer against a real broker: assigned partitions, positions, seeks by offset and
//! time, pause/resume, lag, standalone commits, and read_committed against Java transactions.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Error, IsolationLevel, OffsetAndMetadata,
    OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire::types::{Compression, TopicName};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, kafka_tool, unique_topic};

async fn client() -> Client {
    Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect to the test broker")
}

/// Produces `n` records `0..n` to `topic`, record `i` to partition `i % partitions`, with
/// timestamps `1_000_000 + i`.
async fn produce(topic: &str, partitions: i32, n: i64) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut fs = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic, format!("{i}"))
            .key(format!("k{i}"))
            .partition((i % i64::from(partitions)) as i32)
            .timestamp(1_000_000 + i);
        fs.push(producer.send(r).await.unwrap());
    }
    for f in fs {
        f.await.unwrap();
    }
    producer.close().await.unwrap();
}

/// Polls until `n` records arrived (or 30 s passed).
async fn poll_n(consumer: &Consumer, n: usize) -> Vec<ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Earliest)
}

#[tokio::test]
async fn assigned_partitions_deliver_every_record_in_order() {
    let client = client().await;
    let topic = unique_topic("assign");
    create_topic(&client, &topic, 3, 1, &[]).await;
    produce(&topic, 3, 3000).await;
    let consumer = Consumer::new(config()).await.unwrap();
    consumer.assign((0..3).map(|p| TopicPartition::new(topic.as_str(), p)));
    let records = poll_n(&consumer, 3000).await;
    assert_eq!(records.len(), 3000);
    let mut next = [0i64; 3];
    for r in &records {
        let p = r.partition as usize;
        assert_eq!(r.offset, next[p], "offsets in order per partition");
        next[p] += 1;
        let i: i64 = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
        assert_eq!(i % 3, r.partition as i64);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(r.timestamp, 1_000_000 + i);
    }
    for p in 0..3 {
        let tp = TopicPartition::new(topic.as_str(), p);
        assert_eq!(consumer.position(&tp).await.unwrap(), 1000);
        assert_eq!(consumer.lag(&tp), Some(0));
    }
    // Nothing more arrives.
    assert!(consumer.poll(Duration::from_millis(300)).await.unwrap().is_empty());
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn seeks_by_offset_beginning_end_and_time() {
    let client = client().await;
    let topic = unique_topic("seek");
    create_topic(&client, &topic, 1, 1, &[]).await;
    produce(&topic, 1, 100).await;
    let tp = TopicPartition::new(topic.as_str(), 0);
    let consumer = Consumer::new(config()).await.unwrap();
    consumer.assign([tp.clone()]);
    assert_eq!(poll_n(&consumer, 100).await.len(), 100);

    consumer.seek(&tp, 40).unwrap();
    let r = poll_n(&consumer, 60).await;
    assert_eq!(r.first().map(|r| r.offset), Some(40));
    assert_eq!(r.len(), 60);

    consumer.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 0);
    assert_eq!(poll_n(&consumer, 100).await.len(), 100);

    consumer.seek_to_timestamp(std::slice::from_ref(&tp), 1_000_000 + 77).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 77);
    consumer.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 100);
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn latest_reset_skips_old_records_and_none_is_a_typed_error() {
    let client = client().await;
    let topic = unique_topic("reset");
    create_topic(&client, &topic, 1, 1, &[]).await;
    produce(&topic, 1, 10).await;
    let tp = TopicPartition::new(topic.as_str(), 0);
    let latest = Consumer::new(config().auto_offset_reset(OffsetReset::Latest)).await.unwrap();
    latest.assign([tp.clone()]);
    assert_eq!(latest.position(&tp).await.unwrap(), 10);
    latest.close().await.unwrap();

    let none = Consumer::new(config().group_id(unique_topic("g")).auto_offset_reset(OffsetReset::None)).await.unwrap();
    none.assign([tp.clone()]);
    let err = none.poll(Duration::from_secs(5)).await.expect_err("no offset to start from");
    assert!(matches!(&err, Error::Config { property, .. } if property == "auto.offset.reset"), "{err:?}");
}

#[tokio::test]
async fn paused_partitions_deliver_nothing_until_resumed() {
    let client = client().await;
    let topic = unique_topic("pause");
    create_topic(&client, &topic, 2, 1, &[]).await;
    produce(&topic, 2, 200).await;
    let consumer = Consumer::new(config()).await.unwrap();
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let p1 = TopicPartition::new(topic.as_str(), 1);
    consumer.assign([p0.clone(), p1.clone()]);
    consumer.pause(std::slice::from_ref(&p1)).unwrap();
    let got = poll_n(&consumer, 100).await;
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|r| r.partition == 0));
    assert!(consumer.poll(Duration::from_millis(500)).await.unwrap().is_empty());
    consumer.resume(std::slice::from_ref(&p1)).unwrap();
    let got = poll_n(&consumer, 100).await;
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|r| r.partition == 1));
}

#[tokio::test]
async fn standalone_commits_are_read_back_by_committed_and_by_the_java_tool() {
    let client = client().await;
    let topic = unique_topic("commit");
    let group = unique_topic("standalone");
    create_topic(&client, &topic, 2, 1, &[]).await;
    produce(&topic, 2, 20).await;
    let consumer = Consumer::new(config().group_id(&group).enable_auto_commit(false)).await.unwrap();
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let p1 = TopicPartition::new(topic.as_str(), 1);
    consumer.assign([p0.clone(), p1.clone()]);
    assert_eq!(poll_n(&consumer, 20).await.len(), 20);
    consumer.commit().await.unwrap();
    let mut explicit = BTreeMap::new();
    explicit.insert(p1.clone(), OffsetAndMetadata { offset: 3, leader_epoch: None, metadata: Some("note".into()) });
    consumer.commit_offsets(explicit).await.unwrap();
    let committed = consumer.committed(&[p0.clone(), p1.clone()]).await.unwrap();
    assert_eq!(committed[&p0].as_ref().map(|o| o.offset), Some(10));
    assert_eq!(committed[&p1].as_ref().map(|o| (o.offset, o.metadata.clone())), Some((3, Some("note".into()))));
    consumer.close().await.unwrap();

    let out =
        kafka_tool("consumer-groups", &["--bootstrap-server", &bootstrap(), "--describe", "--group", &group], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let offsets: BTreeMap<i32, String> = text
        .lines()
        .filter(|l| l.contains(&topic))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let i = cols.iter().position(|c| *c == topic)?;
            Some((cols[i + 1].parse().ok()?, cols[i + 2].to_string()))
        })
        .collect();
    assert_eq!(offsets.get(&0).map(String::as_str), Some("10"), "{text}");
    assert_eq!(offsets.get(&1).map(String::as_str), Some("3"), "{text}");
}

#[tokio::test]
async fn read_committed_skips_aborted_java_transactions() {
    let client = client().await;
    let topic = unique_topic("txn");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let tp = TopicPartition::new(topic.as_str(), 0);
    let out = kafka_wire_tests::java_transactions(
        &bootstrap(),
        &topic,
        &[("c1", true), ("a1", false), ("c2", true), ("a2", false)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let committed = Consumer::new(config().isolation_level(IsolationLevel::ReadCommitted)).await.unwrap();
    committed.assign([tp.clone()]);
    let got = poll_n(&committed, 20).await;
    let values: Vec<String> = got.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into()).collect();
    assert_eq!(
        values,
        (0..10).map(|i| format!("c1-{i}")).chain((0..10).map(|i| format!("c2-{i}"))).collect::<Vec<_>>()
    );
    assert!(committed.poll(Duration::from_millis(500)).await.unwrap().is_empty());
    // The position passes the last commit marker, so a consumer at the end has no lag.
    assert_eq!(committed.position(&tp).await.unwrap(), 44);
    assert_eq!(committed.lag(&tp), Some(0));

    // The same log read uncommitted shows the aborted records too, so the filter is what
    // removed them.
    let uncommitted = Consumer::new(config()).await.unwrap();
    uncommitted.assign([tp.clone()]);
    let all = poll_n(&uncommitted, 40).await;
    assert_eq!(all.len(), 40);
    assert!(all.iter().any(|r| r.value.as_deref() == Some(&b"a1-0"[..])));
}

/// A poll waiting in one task takes the records of a partition resumed from another task at
/// once: they were buffered while it was paused, and nothing else arrives to wake the poll.
/// (It waited out its timeout, which made per-partition workers stall at every resume.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_waiting_poll_takes_the_records_of_a_partition_resumed_meanwhile() {
    let topic = unique_topic("resume-wakes-poll");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, 1, 1, &[]).await;
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    for i in 0..10 {
        producer.send(ProducerRecord::new(topic.as_str(), format!("v{i}"))).await.unwrap().await.unwrap();
    }
    // A fetch with nothing new waits 10 s at the broker: its answer must not be what wakes the poll.
    let mut long_poll = config().max_poll_records(1);
    long_poll.fetch_max_wait = Duration::from_secs(10);
    let consumer = Consumer::new(long_poll).await.unwrap();
    let tp = TopicPartition::new(topic.as_str(), 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, 0).unwrap();
    // The first record is handed out; the rest are buffered when the partition is paused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while consumer.poll(Duration::from_millis(200)).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no record");
    }
    consumer.pause(std::slice::from_ref(&tp)).unwrap();
    let waiting = {
        let consumer = consumer.clone();
        tokio::spawn(async move { consumer.poll(Duration::from_secs(60)).await })
    };
    // Resumed once the poll is (very likely) waiting: were it not yet, it would find the records
    // at once and the test would pass without testing anything, never fail wrongly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.resume(std::slice::from_ref(&tp)).unwrap();
    let records = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting poll did not take the resumed partition's records")
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 1);
}

/// As in Java, a consumer with a `group.id` starts an assigned partition from the group's
/// committed offset (and from `auto.offset.reset` where nothing is committed), and a seek made
/// right after `assign` wins over the committed offset (it used to start from
/// `auto.offset.reset` whatever the group had committed).
#[tokio::test]
async fn assigned_partitions_of_a_group_start_from_its_committed_offsets_unless_sought() {
    let client = client().await;
    let topic = unique_topic("assign-committed");
    let group = unique_topic("assign-committed");
    create_topic(&client, &topic, 2, 1, &[]).await;
    produce(&topic, 2, 20).await;
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let p1 = TopicPartition::new(topic.as_str(), 1);
    let committer = Consumer::new(config().group_id(&group).enable_auto_commit(false)).await.unwrap();
    committer.commit_offsets(BTreeMap::from([(p0.clone(), OffsetAndMetadata::new(7))])).await.unwrap();
    committer.close().await.unwrap();

    let consumer = Consumer::new(config().group_id(&group).enable_auto_commit(false)).await.unwrap();
    consumer.assign([p0.clone(), p1.clone()]);
    let records = poll_n(&consumer, 13).await;
    let firsts: BTreeMap<i32, i64> = records.iter().rev().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(
        firsts,
        BTreeMap::from([(0, 7), (1, 0)]),
        "p0 from its committed 7, p1 (nothing committed) from the earliest"
    );
    assert_eq!(records.len(), 13, "3 of p0 and 10 of p1: {records:?}");
    consumer.close().await.unwrap();

    let sought = Consumer::new(config().group_id(&group).enable_auto_commit(false)).await.unwrap();
    sought.assign([p0.clone()]);
    sought.seek(&p0, 2).unwrap();
    let records = poll_n(&sought, 8).await;
    assert_eq!(records.first().map(|r| r.offset), Some(2), "the seek wins over the committed offset");
    assert_eq!(records.len(), 8);
    sought.close().await.unwrap();
}

/// A partition with records left out of a Fetch (it held its share of
/// `queued.max.messages.kbytes`) waited behind a Fetch for partitions read to their end, which
/// the broker holds for `fetch.max.wait.ms`: here 20 s. Partition 0 holds 3 MiB, partition 1 one
/// record; with a 3 MiB budget each partition's share is 1.5 MiB, which partition 0 passes after
/// two fetches while partition 1 is at its end. Every record must come well before the broker
/// would answer a Fetch for partition 1 alone.
#[tokio::test]
async fn regression_records_behind_a_full_partition_do_not_wait_for_a_fetch_at_the_end() {
    let client = client().await;
    let topic = unique_topic("held-back");
    create_topic(&client, &topic, 2, 1, &[]).await;
    let producer =
        Producer::new(ProducerConfig::new(&bootstrap()).batch_size(16 * 1024).linger(Duration::from_millis(5)))
            .await
            .unwrap();
    let value = vec![b'v'; 1024];
    let mut acks = Vec::new();
    for i in 0..3000 {
        acks.push(
            producer.send(ProducerRecord::new(&topic, value.clone()).key(format!("k{i}")).partition(0)).await.unwrap(),
        );
    }
    acks.push(producer.send(ProducerRecord::new(&topic, "alone").partition(1)).await.unwrap());
    for ack in acks {
        ack.await.unwrap();
    }
    producer.close().await.unwrap();

    let mut config = config();
    config.set("fetch.max.wait.ms", "20000").unwrap();
    config.set("queued.max.messages.kbytes", "3072").unwrap();
    let consumer = Consumer::new(config).await.unwrap();
    consumer.assign((0..2).map(|p| TopicPartition::new(topic.as_str(), p)));
    // Nothing is taken until partition 0 holds more than its share: then, before the fix, the
    // driver had already sent a Fetch for partition 1 alone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consumer.prefetched_bytes() <= 1536 * 1024 + 4096 {
        assert!(tokio::time::Instant::now() < deadline, "prefetched {} B", consumer.prefetched_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut records = 0;
    while records < 3001 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{records} of 3001 records in 10 s: the rest waited behind a Fetch at the end (fetch.max.wait.ms 20 s)"
        );
        records += consumer.poll(Duration::from_millis(500)).await.unwrap().len();
    }
    assert_eq!(records, 3001);
    consumer.close().await.unwrap();
}

/// Records of two topics in one poll each name their own topic: the name a record carries is
/// interned once and reused while the topic stays the same (regression guard for that cache:
/// the poll goes from one topic's partitions to the other's and back).
#[tokio::test]
async fn records_of_two_topics_in_one_poll_name_their_own_topic() {
    let client = client().await;
    let (a, b) = (unique_topic("names-a"), unique_topic("names-b"));
    for topic in [&a, &b] {
        create_topic(&client, topic, 2, 1, &[]).await;
        let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
        let mut fs = Vec::new();
        for i in 0..200 {
            fs.push(producer.send(ProducerRecord::new(topic.as_str(), topic.clone()).partition(i % 2)).await.unwrap());
        }
        for f in fs {
            f.await.unwrap();
        }
        producer.close().await.unwrap();
    }
    let consumer = Consumer::new(config().max_poll_records(1000)).await.unwrap();
    consumer.assign([&a, &b].into_iter().flat_map(|t| (0..2).map(move |p| TopicPartition::new(t.as_str(), p))));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut read, mut switches) = (0, 0);
    while read < 400 {
        assert!(tokio::time::Instant::now() < deadline, "read {read} of 400 records");
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        for r in &records {
            assert_eq!(r.topic, *std::str::from_utf8(r.value.as_deref().unwrap()).unwrap(), "offset {}", r.offset);
            assert_eq!(r.topic, TopicName::new(&r.topic));
            assert_eq!(&*r.topic_partition().topic, &*r.topic);
        }
        switches += records.windows(2).filter(|w| w[0].topic != w[1].topic).count();
        read += records.len();
    }
    assert!(switches >= 2, "no poll went from one topic to the other and back ({switches} switches)");
    consumer.close().await.unwrap();
}

/// Records read in place (`poll_views`) are the records `poll` returns, partition by partition
/// in the same order: keys (some null), values (some null), headers, timestamps, leader epochs,
/// from an uncompressed and an lz4 topic. A consumer that alternates the two calls a few
/// records at a time (so that a batch begun in one call goes on in the next, both ways round)
/// reads each record once and ends at the same positions.
#[tokio::test]
async fn records_read_in_place_are_the_records_polled() {
    let client = client().await;
    let (plain, lz4) = (unique_topic("views-plain"), unique_topic("views-lz4"));
    for (topic, compression) in [(&plain, Compression::None), (&lz4, Compression::Lz4)] {
        create_topic(&client, topic, 2, 1, &[]).await;
        let producer = Producer::new(ProducerConfig::new(&bootstrap()).compression(compression)).await.unwrap();
        let mut fs = Vec::new();
        for i in 0..300i64 {
            let mut r = ProducerRecord::new(topic.as_str(), format!("value {i} of {topic}")).partition((i % 2) as i32);
            r.timestamp = Some(2_000_000 + i);
            if i % 5 != 0 {
                r.key = Some(format!("k{i}").into());
            }
            if i % 7 == 0 {
                r.value = None;
            }
            if i % 3 == 0 {
                r = r.header("n", format!("{i}")).header("empty", "");
            }
            fs.push(producer.send(r).await.unwrap());
        }
        for f in fs {
            f.await.unwrap();
        }
        producer.close().await.unwrap();
    }
    let tps: Vec<TopicPartition> =
        [&plain, &lz4].into_iter().flat_map(|t| (0..2).map(move |p| TopicPartition::new(t.as_str(), p))).collect();
    let by_partition = |records: Vec<ConsumerRecord>| {
        let mut m: BTreeMap<TopicPartition, Vec<ConsumerRecord>> = BTreeMap::new();
        for r in records {
            m.entry(r.topic_partition()).or_default().push(r);
        }
        m
    };

    let polled = Consumer::new(config().max_poll_records(1000)).await.unwrap();
    polled.assign(tps.iter().cloned());
    let expected = by_partition(poll_n(&polled, 600).await);

    let mixed = Consumer::new(config().max_poll_records(7)).await.unwrap();
    mixed.assign(tps.iter().cloned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut got, mut calls) = (Vec::new(), 0);
    while got.len() < 600 {
        assert!(tokio::time::Instant::now() < deadline, "read {} of 600 records", got.len());
        calls += 1;
        if calls % 2 == 0 {
            got.extend(mixed.poll(Duration::from_millis(500)).await.unwrap());
            continue;
        }
        let views = mixed.poll_views(Duration::from_millis(500)).await.unwrap();
        assert_eq!(views.len(), views.iter().len());
        for (i, v) in views.iter().enumerate() {
            let r = v.to_record();
            assert_eq!(
                (v.topic(), v.partition(), v.offset(), v.timestamp()),
                (r.topic, r.partition, r.offset, r.timestamp)
            );
            assert_eq!((v.key(), v.value()), (r.key.as_deref(), r.value.as_deref()));
            assert_eq!((v.timestamp_type(), v.leader_epoch()), (r.timestamp_type, r.leader_epoch));
            assert_eq!(v.headers().to_vec(), r.headers.to_vec());
            assert_eq!(v.topic_partition(), r.topic_partition());
            assert_eq!(views.get(i).map(|g| g.offset()), Some(v.offset()));
        }
        got.extend(views.to_records());
    }
    assert_eq!(got.len(), 600, "no record twice");
    let got = by_partition(got);
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (tp, records) in &expected {
        let mine = &got[tp];
        assert_eq!(mine.len(), 150, "{tp:?}");
        assert_eq!(mine, records, "{tp:?}");
        // The records carry what was sent: null keys and values, headers, timestamps.
        let nulls = records.iter().filter(|r| r.value.is_none()).count();
        assert!(nulls > 0 && records.iter().any(|r| r.key.is_none()) && records.iter().any(|r| r.headers.len() == 2));
    }
    assert_eq!(mixed.positions(), polled.positions());
    mixed.close().await.unwrap();
    polled.close().await.unwrap();
}
