//! Writes seed inputs for every fuzz target into `corpus/<target>/` (next to this crate's
//! Cargo.toml): well-formed messages at every version, record batches with every codec and
//! compressed payloads, so the fuzzers start from valid structure instead of from nothing.
//!
//! `cargo +nightly run --release --manifest-path fuzz/Cargo.toml --example seeds`

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::codec::compression::{compress, Compression};
use kafka_wire::codec::header::{RequestHeader, ResponseHeader};
use kafka_wire::codec::messages::{Message, Request};
use kafka_wire::codec::record_batch::{
    BatchBuilder, ControlRecord, ControlType, EndTxnMarker, Header,
};
use kafka_wire::codec::{RawTaggedField, UnknownTaggedFields};

/// A small deterministic generator (xorshift64*), so the seeds are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Corpus {
    dir: PathBuf,
    count: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        Self { dir, count: 0 }
    }

    fn add(&mut self, data: &[u8]) {
        fs::write(self.dir.join(format!("seed-{:05}", self.count)), data).unwrap();
        self.count += 1;
    }
}

/// Values of `M` to encode: the default and two arbitrary ones.
fn values<M>(rng: &mut Rng) -> Vec<M>
where
    M: Message + Default + for<'a> Arbitrary<'a>,
{
    let mut out = vec![M::default()];
    for len in [64, 512] {
        let raw = rng.bytes(len);
        if let Ok(v) = M::arbitrary(&mut Unstructured::new(&raw)) {
            out.push(v);
        }
    }
    out
}

fn prefixed(key: i16, version: i16, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + rest.len());
    v.extend_from_slice(&key.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(rest);
    v
}

fn message_seeds<Req>(key: i16, rng: &mut Rng, requests: &mut Corpus, responses: &mut Corpus)
where
    Req: Request + Default + for<'a> Arbitrary<'a>,
    Req::Response: Default + for<'a> Arbitrary<'a>,
{
    let versions = Req::VERSIONS;
    for version in versions.min..=versions.max {
        for (i, mut req) in values::<Req>(rng).into_iter().enumerate() {
            let mut body = BytesMut::new();
            req.retain_version(version);
            req.encode(&mut body, version).expect("a value reduced to its version encodes");
            requests.add(&prefixed(key, version, &body));
            let mut frame = BytesMut::new();
            let header = RequestHeader {
                api_key: Req::API_KEY,
                api_version: version,
                correlation_id: i as i32,
                client_id: Some("fuzz".into()),
                unknown_tagged_fields: UnknownTaggedFields::new(),
            };
            header.encode(&mut frame, Req::request_header_version(version)).expect("a short client id encodes");
            frame.extend_from_slice(&body);
            requests.add(&prefixed(key, version, &frame));
        }
        if !<Req::Response as Message>::VERSIONS.contains(version) {
            continue;
        }
        for (i, mut resp) in values::<Req::Response>(rng).into_iter().enumerate() {
            let mut body = BytesMut::new();
            resp.retain_version(version);
            resp.encode(&mut body, version).expect("a value reduced to its version encodes");
            responses.add(&prefixed(key, version, &body));
            let mut frame = BytesMut::new();
            let mut header = ResponseHeader {
                correlation_id: i as i32,
                unknown_tagged_fields: UnknownTaggedFields::new(),
            };
            if i == 2 {
                header.unknown_tagged_fields.push(RawTaggedField {
                    tag: 9,
                    data: Bytes::from_static(b"t"),
                });
            }
            header.encode(&mut frame, Req::response_header_version(version)).expect("a header encodes");
            frame.extend_from_slice(&body);
            responses.add(&prefixed(key, version, &frame));
            // The same frame with its size prefix, for the frame splitter.
            let mut sized = BytesMut::new();
            sized.put_i32(frame.len() as i32);
            sized.extend_from_slice(&frame);
            responses.add(&sized);
        }
    }
}

/// Payloads to compress: empty, short, repetitive, random and mixed.
fn payloads(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut text = Vec::new();
    while text.len() < 20_000 {
        text.extend_from_slice(b"the quick brown fox jumps over the lazy dog; ");
    }
    let mut mixed = rng.bytes(3000);
    mixed.extend_from_slice(&text[..5000]);
    mixed.extend(rng.bytes(100));
    vec![
        Vec::new(),
        b"a".to_vec(),
        b"hello, kafka".to_vec(),
        text.clone(),
        vec![0; 70_000],
        rng.bytes(2000),
        mixed,
    ]
}

fn batches(rng: &mut Rng) -> Vec<Bytes> {
    let mut out = Vec::new();
    for codec in Compression::ALL {
        // Plain records with keys, values and headers.
        let mut b = BatchBuilder::new(0);
        for i in 0..5 {
            let value = rng.bytes(20 + i * 7);
            let headers = [
                Header::new("trace", Some(Bytes::from(rng.bytes(4)))),
                Header::new("k", None::<Bytes>),
            ];
            let key = format!("key-{i}");
            b.push(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                Some(&value),
                &headers[..i % 3],
            )
            .unwrap();
        }
        out.push(b.finish(codec));
        // An idempotent, transactional batch with null keys and a log append time.
        let mut b = BatchBuilder::new(42);
        b.set_producer_state(1000, 3, 17)
            .set_transactional(true)
            .set_log_append_time(Some(99));
        b.push(5, None, Some(b"v1"), &[]).unwrap();
        b.push(3, None, None, &[]).unwrap();
        out.push(b.finish(codec));
        // A larger, compressible batch.
        let mut b = BatchBuilder::new(7);
        for i in 0..50 {
            b.push(i, Some(b"same-key"), Some(&[b'x'; 300]), &[])
                .unwrap();
        }
        out.push(b.finish(codec));
    }
    // A control batch with a COMMIT marker, and an empty batch.
    let mut b = BatchBuilder::new(100);
    b.set_producer_state(1000, 3, -1)
        .set_transactional(true)
        .set_control(true);
    let key = ControlRecord::new(ControlType::COMMIT).encode();
    let value = EndTxnMarker {
        version: 0,
        coordinator_epoch: 5,
    }
    .encode();
    b.push(1, Some(&key), Some(&value), &[]).unwrap();
    out.push(b.finish(Compression::None));
    out.push(BatchBuilder::new(0).finish(Compression::None));
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let mut requests = Corpus::new(&root, "request_frame");
    let mut responses = Corpus::new(&root, "response_frame");
    macro_rules! each {
        ($key:literal, $req:ty, $resp:ty) => {
            message_seeds::<$req>($key, &mut rng, &mut requests, &mut responses);
        };
    }
    kafka_wire::for_each_api!(each);

    let payloads = payloads(&mut rng);
    for (name, codec) in [
        ("decompress_gzip", Compression::Gzip),
        ("decompress_snappy", Compression::Snappy),
        ("decompress_lz4", Compression::Lz4),
        ("decompress_zstd", Compression::Zstd),
    ] {
        let mut corpus = Corpus::new(&root, name);
        for p in &payloads {
            let mut out = BytesMut::new();
            compress(codec, p, &mut out);
            corpus.add(&out);
        }
        // Two members/frames back to back.
        let mut out = BytesMut::new();
        compress(codec, b"first", &mut out);
        compress(codec, &payloads[3], &mut out);
        corpus.add(&out);
        // Snappy also takes a bare block.
        if codec == Compression::Snappy {
            corpus.add(
                &snap::raw::Encoder::new()
                    .compress_vec(&payloads[3])
                    .unwrap(),
            );
        }
    }

    let batches = batches(&mut rng);
    for name in ["record_batch", "record_batch_valid_crc"] {
        let mut corpus = Corpus::new(&root, name);
        for b in &batches {
            corpus.add(b);
        }
        // Several batches back to back, and one cut short.
        let all: Vec<u8> = batches
            .iter()
            .take(4)
            .flat_map(|b| b.iter().copied())
            .collect();
        corpus.add(&all);
        corpus.add(&all[..all.len() - 10]);
    }

    for c in [&requests, &responses] {
        println!("{}: {} seeds", c.dir.display(), c.count);
    }
}
