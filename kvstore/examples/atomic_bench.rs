//! `cargo run --release -p kvstore --example atomic_bench [-- BOOTSTRAP [COMMANDS [KEYS [PARTITIONS]]]]`:
//! the atomic store's throughput and latency against a running broker.
//!
//! 1. COMMANDS increments (default 50 000) over KEYS keys (default 1 000) are sent to a new
//!    commands topic of PARTITIONS partitions (default 4) before the processor starts; then one
//!    processor instance applies them: commands/s from its start until the store topic holds
//!    every increment (the time includes joining the group and loading the partitions).
//! 2. With the processor idle, one caller `execute`s 1 000 increments one after the other: the
//!    round trip (command produced, applied in a transaction, reply read) p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::{AtomicConfig, AtomicKvStore, AtomicProcessor, Command, KvConfig, KvStore, Stop};

/// Concurrent senders while the commands are written.
const SENDERS: usize = 64;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let commands: usize = args.next().map_or(Ok(50_000), |s| s.parse())?;
    let keys: usize = args.next().map_or(Ok(1_000), |s| s.parse())?;
    let partitions: i32 = args.next().map_or(Ok(4), |s| s.parse())?;
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let name = format!("atomic-bench-{millis}");
    let config = AtomicConfig::new(&bootstrap, &name).partitions(partitions);

    // The store topic first, so that it is co-partitioned and watched from the start.
    let counts: KvStore<String, i64> =
        KvStore::open(KvConfig::new(&bootstrap, config.store()).partitions(partitions)).await?;
    let callers = Arc::new(AtomicKvStore::connect(&config).await?);
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let callers = callers.clone();
            tokio::spawn(async move {
                for i in (s..commands).step_by(SENDERS) {
                    callers.send(&format!("key-{}", i % keys), &Command::increment(1)).await?;
                }
                Ok::<_, kvstore::Error>(())
            })
        })
        .collect();
    for sender in senders {
        sender.await??;
    }
    let sent_in = started.elapsed();

    let processor = AtomicProcessor::new(config.clone(), format!("{name}-group"), format!("{name}-tx"));
    let stop = Stop::new();
    let started = Instant::now();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { processor.run(&stop).await }
    });
    let total = || counts.iter().map_or(0, |e| e.iter().map(|(_, n)| *n as usize).sum::<usize>());
    // The store is a watched in-memory map: looking every 10 ms costs little.
    let deadline = Instant::now() + Duration::from_secs(600);
    while total() < commands {
        if Instant::now() > deadline || running.is_finished() {
            return Err(format!("the processor applied {} of {commands} commands", total()).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_in = started.elapsed();

    let mut round_trips = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let start = Instant::now();
        callers.execute("latency", &Command::increment(1)).await?;
        round_trips.push(start.elapsed());
    }
    round_trips.sort();
    stop.trigger();
    running.await??;

    println!("atomic store: {commands} increments over {keys} keys, {partitions} partitions, 1 processor");
    println!(
        "  sent by {SENDERS} concurrent callers in {:.2} s ({:.0} commands/s acknowledged)",
        sent_in.as_secs_f64(),
        commands as f64 / sent_in.as_secs_f64()
    );
    println!(
        "  applied in {:.2} s from the processor's start: {:.0} commands/s (exactly once, one transaction per poll)",
        applied_in.as_secs_f64(),
        commands as f64 / applied_in.as_secs_f64()
    );
    println!(
        "  execute round trip, one caller, sequential: p50 {:.2} ms, p99 {:.2} ms",
        round_trips[round_trips.len() / 2].as_secs_f64() * 1e3,
        round_trips[round_trips.len() * 99 / 100].as_secs_f64() * 1e3
    );
    println!("  (a shared, noisy machine: the figures vary from run to run)");
    Ok(())
}
