//! A KIP-848 member (`group.protocol=consumer`) against a cluster without the consumer group
//! protocol (a fake broker that offers no ConsumerGroupHeartbeat, as Kafka before 4.0 does): the
//! consumer reports a configuration error that says what is needed and that the classic protocol
//! works, instead of a bare UNSUPPORTED_VERSION.

#[path = "support/classic_only_broker.rs"]
mod classic_only_broker;

use std::time::Duration;

use kafka_wire::client::{Consumer, ConsumerConfig, Error, GroupProtocol};

#[tokio::test]
async fn a_kip_848_member_without_the_consumer_protocol_is_told_to_use_classic() {
    let broker = classic_only_broker::ClassicOnlyBroker::start("t", 2).await;
    let consumer =
        Consumer::new(ConsumerConfig::new(broker.addr()).group_id("g").group_protocol(GroupProtocol::Consumer))
            .await
            .expect("connect to the fake broker");
    consumer.subscribe(["t"]).unwrap();
    let error = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Err(e) = consumer.poll(Duration::from_millis(100)).await {
                return e;
            }
        }
    })
    .await
    .expect("poll reports the missing protocol within 30 s");
    let text = error.to_string();
    let Error::Config { property, reason } = &error else { panic!("not a configuration error: {error:?}") };
    assert_eq!(property, "group.protocol", "{text}");
    for needed in ["KIP-848", "4.0", "group.protocol=classic"] {
        assert!(reason.contains(needed), "{needed:?} missing from: {text}");
    }
}
