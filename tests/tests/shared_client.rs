//! A producer, a consumer and an admin client built on one `Client` share its connections:
//! fewer connections than three clients of their own, and closing one of them leaves the
//! others working.

use std::time::Duration;

use kafka_wire::{Admin, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::{Error, TopicPartition};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic};

/// Produces 10 records, reads them back and describes the topic, with the three clients given.
async fn round_trip(producer: &Producer, consumer: &Consumer, admin: &Admin, topic: &str) {
    let mut deliveries = Vec::new();
    for i in 0..10 {
        deliveries.push(producer.send(ProducerRecord::new(topic, format!("v{i}"))).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    consumer.assign([TopicPartition::new(topic, 0)]);
    consumer.seek(&TopicPartition::new(topic, 0), 0).expect("seek");
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read < 10 {
        assert!(tokio::time::Instant::now() < deadline, "read {read} of 10 records within 60 s");
        read += consumer.poll(Duration::from_millis(500)).await.expect("poll").len();
    }
    admin.describe_topics(&[topic]).await.expect("describe");
}

/// Connections `client` has opened, by its own count.
fn connections(client: &Client) -> u64 {
    client.metrics().connections_opened()
}

#[tokio::test]
async fn clients_built_on_one_client_share_its_connections() {
    let setup = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let topic = unique_topic("shared");
    create_topic(&setup, &topic, 1, 1, &[]).await;
    setup.close().await;

    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.expect("producer");
    let consumer = Consumer::new(ConsumerConfig::new(&bootstrap())).await.expect("consumer");
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.expect("admin");
    round_trip(&producer, &consumer, &admin, &topic).await;
    let separate = connections(producer.client()) + connections(consumer.client()) + connections(admin.client());
    producer.close().await.expect("close");
    consumer.close().await.expect("close");
    admin.close().await;

    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let producer = Producer::with_client(client.clone(), ProducerConfig::new(&bootstrap())).expect("producer");
    let consumer = Consumer::with_client(client.clone(), ConsumerConfig::new(&bootstrap())).expect("consumer");
    let admin = Admin::new(client.clone());
    round_trip(&producer, &consumer, &admin, &topic).await;
    let shared = connections(&client);
    eprintln!("connections opened: one shared client {shared}, three clients of their own {separate}");
    // Each client of its own opens at least its bootstrap connection and one to the leader.
    assert!(separate >= 3, "three clients opened {separate} connections");
    assert!(shared < separate, "one client: {shared} connections; three clients: {separate}");

    // Closing the producer and the consumer leaves the shared connections to the others.
    producer.close().await.expect("close");
    consumer.close().await.expect("close");
    admin.describe_topics(&[topic.as_str()]).await.expect("admin after the others closed");
    assert_eq!(connections(&client), shared, "no connection was reopened after the closes");
    admin.close().await;
}

#[tokio::test]
async fn a_shared_client_whose_request_timeout_a_fetch_would_outlast_is_refused() {
    let mut config = ClientConfig::new(&bootstrap());
    config.connection.request_timeout = Duration::from_millis(400);
    let client = Client::connect(config).await.expect("connect");
    let err = Consumer::with_client(client, ConsumerConfig::new(&bootstrap())).err().expect("refused");
    assert!(matches!(&err, Error::Config { property, .. } if property == "fetch.max.wait.ms"), "{err:?}");
}

/// On a client shared by a consumer and a producer, a send does not queue behind the
/// consumer's Fetch, which the broker holds for up to `fetch.max.wait.ms` (here 10 s) on an
/// empty partition: the fetch has a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_a_shared_client_does_not_wait_behind_a_long_polling_fetch() {
    const LONG_POLL: Duration = Duration::from_secs(10);
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let (empty, written) = (unique_topic("shared-long-poll"), unique_topic("shared-send"));
    create_topic(&client, &empty, 1, 1, &[]).await;
    create_topic(&client, &written, 1, 1, &[]).await;
    let mut config = ConsumerConfig::new(&bootstrap());
    config.fetch_max_wait = LONG_POLL;
    let consumer = Consumer::with_client(client.clone(), config).expect("consumer");
    let tp = TopicPartition::new(empty.as_str(), 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, 0).expect("seek");
    // The first fetch goes out and waits at the broker (nothing to read).
    assert!(consumer.poll(Duration::from_millis(300)).await.expect("poll").is_empty());
    let producer = Producer::with_client(client.clone(), ProducerConfig::new(&bootstrap())).expect("producer");
    for i in 0..3 {
        let delivery = producer.send(ProducerRecord::new(written.as_str(), format!("v{i}"))).await.expect("send");
        tokio::time::timeout(LONG_POLL / 2, delivery)
            .await
            .expect("the send waited behind the consumer's long-polling fetch")
            .expect("delivered");
    }
    producer.close().await.expect("close");
    consumer.close().await.expect("close");
}
