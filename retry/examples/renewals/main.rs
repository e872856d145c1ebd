//! `cargo run -p retry --example renewals [-- [BOOTSTRAP] [--dashboard 127.0.0.1:PORT]]`: the
//! article's subscription renewals (pattern 4, schedule-and-forget) against a running broker
//! (`cargo xtask kafka up`). See `scenario.rs` for the story.
//!
//! With `--dashboard`, the operator's dashboard of the run's topic and group is served there
//! during the story; afterwards a renewal of `user-stuck`, whose card is always declined, blocks
//! its partition until someone skips it on the dashboard (and a redrive brings it back, to block
//! again). Ctrl-C stops it.

mod scenario;

use std::error::Error;
use std::time::Duration;

use kafka_wire::client::{ClientConfig, OffsetReset};
use kafka_wire::{Client, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};
use retry::dashboard::Dashboard;
use retry::{Failed, RetryConfig, RetryPolicy, RetryingConsumer};

const USAGE: &str = "usage: renewals [BOOTSTRAP] [--dashboard 127.0.0.1:PORT]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut bootstrap = "127.0.0.1:9092".to_owned();
    let mut dashboard = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dashboard" => dashboard = Some(args.next().ok_or(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}\n{USAGE}").into()),
            _ => bootstrap = arg,
        }
    }
    let Some(address) = dashboard else {
        report(&scenario::run(&bootstrap, 20, 10).await?);
        return Ok(());
    };

    let (topic, group) = scenario::names();
    let listener = tokio::net::TcpListener::bind(&address).await.map_err(|e| format!("binding {address}: {e}"))?;
    let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
    let dashboard = Dashboard::new(client, [(topic.clone(), group.clone())])?.operator("renewals example");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(dashboard.serve(listener, async move {
        let _ = stopped.await;
    }));
    println!("dashboard of {topic} for group {group}: http://{address}/");
    report(&scenario::run_on(&bootstrap, topic.clone(), group.clone(), 20, 10).await?);
    stuck_until_ctrl_c(&bootstrap, &topic, &group).await?;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}

fn report(outcome: &scenario::Outcome) {
    let charged: usize = outcome.charged_while_flaky.values().map(Vec::len).sum();
    let in_order = outcome.charged_while_flaky.values().all(|r| r.windows(2).all(|w| w[0] < w[1]));
    println!("users                              {}", outcome.users);
    println!("renewals scheduled (flaky phase)   {}", outcome.scheduled);
    println!(
        "charged, with a 70% failing payment provider: {charged} in {} attempts; per-user order kept: {in_order}",
        outcome.attempts_while_flaky
    );
    println!("provider down: {} renewals in the dead-letter queue", outcome.dead_letters_while_down);
    println!("provider back: redrive charged {} of them", outcome.charged_after_redrive);
}

/// A renewal whose charge always fails, retried in place for ever: its partition stays blocked
/// until an operator skips it (to the dead-letter queue). Runs until Ctrl-C.
async fn stuck_until_ctrl_c(bootstrap: &str, topic: &str, group: &str) -> Result<(), Box<dyn Error>> {
    let consumer = ConsumerConfig::new(bootstrap).group_id(group).auto_offset_reset(OffsetReset::Earliest);
    let endless = RetryPolicy::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(5), None);
    let renewals = RetryingConsumer::new(RetryConfig::new(consumer, topic, endless), |r: ConsumerRecord| async move {
        if r.key.as_deref() == Some(b"user-stuck".as_slice()) {
            return Err(Failed::from("card declined by the payment provider"));
        }
        Ok(())
    })
    .await?;
    let producer = Producer::new(ProducerConfig::new(bootstrap)).await?;
    producer.send(ProducerRecord::new(topic, "1").key("user-stuck")).await?.await?;
    producer.close().await?;
    println!("a renewal of user-stuck now blocks its partition: skip it on the dashboard; Ctrl-C to stop");
    renewals
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
