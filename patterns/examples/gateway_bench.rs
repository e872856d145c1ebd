//! Gateway fan-out benchmark (issue #12): `cargo run --release -p patterns --example gateway_bench
//! -- [bootstrap] [sockets] [channels] [notifications] [rate]` (defaults 127.0.0.1:9092, 1000, 10,
//! 5000, 0). A rate of 0 publishes as fast as possible (throughput); a rate in notifications/s
//! paces the publisher (latency below saturation).
//!
//! Opens `sockets` websockets spread over `channels` channels on one gateway, publishes
//! `notifications` (round robin over the channels, each carrying its produce time), and waits
//! until every socket has its channel's share. Prints notifications/s and frames delivered/s,
//! p50/p99/max latency from the producer's send to the frame read by the socket, the process's
//! CPU seconds and max RSS (the gateway, the producer and the clients share the process).

#[path = "../../kafka-wire/examples/support/proc_stats.rs"]
mod proc_stats;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kafka_wire::client::{Admin, NewTopic};
use kafka_wire::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use patterns::gateway::{Gateway, GatewayConfig};
use tokio_tungstenite::tungstenite::Message;

fn micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bootstrap = args.first().cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let sockets: usize = args.get(1).map_or(Ok(1000), |s| s.parse())?;
    let channels: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let notifications: usize = args.get(3).map_or(Ok(5000), |s| s.parse())?;
    let rate: f64 = args.get(4).map_or(Ok(0.0), |s| s.parse())?;
    let per_channel = notifications / channels;

    let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
    let topic = format!("gateway-bench-{}", micros_now());
    Admin::new(client.clone()).create_topics(&[NewTopic::new(&topic, 3, 1)], false).await?;
    let gateway = Gateway::start(GatewayConfig::new(&bootstrap, &topic).client_buffer(per_channel + 16)).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = gateway.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut readers = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/bench-{}", i % channels)).await?;
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_channel);
            while latencies.len() < per_channel {
                match tokio::time::timeout(Duration::from_secs(60), socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        let sent = v["data"]["t"].as_u64().unwrap_or(0);
                        latencies.push(micros_now().saturating_sub(sent));
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            (latencies, Instant::now())
        }));
    }
    println!("{sockets} sockets open on {channels} channels; publishing {} notifications", per_channel * channels);

    let (user0, sys0) = proc_stats::cpu_seconds("/proc/self/stat");
    let producer = Producer::with_client(client.clone(), ProducerConfig::new(&bootstrap))?;
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(notifications);
    for n in 0..per_channel * channels {
        if rate > 0.0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(n as f64 / rate)).into()).await;
        }
        let value = serde_json::json!({ "n": n, "t": micros_now() }).to_string();
        let record = ProducerRecord::new(topic.as_str(), value).key(format!("bench-{}", n % channels).into_bytes());
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    let published = start.elapsed();

    let mut latencies = Vec::with_capacity(sockets * per_channel);
    let mut last = start;
    for r in readers {
        let (l, at) = r.await?;
        latencies.extend(l);
        last = last.max(at);
    }
    let elapsed = last - start;
    let (user1, sys1) = proc_stats::cpu_seconds("/proc/self/stat");
    latencies.sort_unstable();
    let expected = sockets * per_channel;
    println!("frames delivered            {} of {expected}", latencies.len());
    println!(
        "published in                {:.2} s ({:.0} notifications/s)",
        published.as_secs_f64(),
        (per_channel * channels) as f64 / published.as_secs_f64()
    );
    println!(
        "all delivered in            {:.2} s ({:.0} frames/s)",
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "produce-to-socket latency   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&latencies, 0.5) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!("CPU (whole process)         {:.2} s user+sys", (user1 - user0) + (sys1 - sys0));
    println!("max RSS (VmHWM)             {:.1} MiB", proc_stats::status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0);
    println!("load average                {}", proc_stats::loadavg());
    producer.close().await?;
    gateway.close().await;
    Admin::new(client.clone()).delete_topics(&[topic.as_str()]).await?;
    client.close().await;
    if latencies.len() < expected {
        return Err(format!("only {} of {expected} frames arrived", latencies.len()).into());
    }
    Ok(())
}
