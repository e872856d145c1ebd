//! A broker that never answers a Produce, for tests of what a client does while a request is
//! outstanding (kw's signal handling). Moved here from kw's CLI tests: it speaks the wire
//! protocol, which is kafka-wire's, not the public surface the kw sources are limited to.

#[path = "frames.rs"]
mod frames;

/// A broker on 127.0.0.1 that serves one topic of one partition (ApiVersions, Metadata,
/// InitProducerId) but never answers a Produce: it reports each Produce request on the receiver
/// and holds the connection open. A real broker cannot be made to hold a Produce forever without
/// stopping it for the other tests.
pub fn mute_broker(topic: &str) -> (String, std::sync::mpsc::Receiver<()>) {
    use bytes::{Bytes, BytesMut};
    use kafka_wire::codec::messages::metadata::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_wire::codec::messages::{
        ApiVersionsRequest, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
        ProduceRequest,
    };
    use kafka_wire::codec::ApiKey;
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, topic) = (tx.clone(), topic.clone());
            std::thread::spawn(move || loop {
                let mut size = [0u8; 4];
                if stream.read_exact(&mut size).is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(size).min(1 << 24) as usize];
                if stream.read_exact(&mut body).is_err() || body.len() < 4 {
                    return;
                }
                let api = ApiKey(i16::from_be_bytes([body[0], body[1]]));
                let version = i16::from_be_bytes([body[2], body[3]]);
                let mut frame = Bytes::from(body);
                let mut out = BytesMut::new();
                match api {
                    ApiKey::API_VERSIONS => {
                        let apis = vec![
                            frames::api::<ApiVersionsRequest>(),
                            frames::api::<MetadataRequest>(),
                            frames::api::<ProduceRequest>(),
                            frames::api::<InitProducerIdRequest>(),
                        ];
                        frames::answer_api_versions(&mut frame, version, apis, &mut out)
                            .expect("an ApiVersions header");
                    }
                    ApiKey::METADATA => {
                        let Some((header, _)) = frames::decode::<MetadataRequest>(&mut frame, version) else { return };
                        let response = MetadataResponse {
                            brokers: vec![MetadataResponseBroker {
                                node_id: 1,
                                host: "127.0.0.1".into(),
                                port: i32::from(port),
                                ..Default::default()
                            }],
                            controller_id: 1,
                            topics: vec![MetadataResponseTopic {
                                name: Some(topic.as_str().into()),
                                partitions: vec![MetadataResponsePartition {
                                    leader_id: 1,
                                    replica_nodes: vec![1],
                                    isr_nodes: vec![1],
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }],
                            ..Default::default()
                        };
                        frames::respond::<MetadataRequest>(&mut out, header.correlation_id, &response, version);
                    }
                    ApiKey::INIT_PRODUCER_ID => {
                        let Some((header, _)) = frames::decode::<InitProducerIdRequest>(&mut frame, version) else {
                            return;
                        };
                        let response = InitProducerIdResponse { producer_id: 1, ..Default::default() };
                        frames::respond::<InitProducerIdRequest>(&mut out, header.correlation_id, &response, version);
                    }
                    ApiKey::PRODUCE => {
                        let _ = tx.send(());
                        continue;
                    }
                    _ => return,
                }
                if stream.write_all(&out).is_err() {
                    return;
                }
            });
        }
    });
    (format!("127.0.0.1:{port}"), rx)
}
