//! `cargo run -p kvstore --example contacts_import [-- BOOTSTRAP [JOBS [TOPIC_PREFIX]]]`: the article's atomic
//! KV store (pattern 6) against a running broker (`cargo xtask kafka up`). See `scenario.rs`
//! for the story. Each run imports a new request (its id is the time), on the same topics.

mod scenario;

#[tokio::main]
async fn main() -> kvstore::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let jobs: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(6);
    let prefix = args.next().unwrap_or_default();
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let request = format!("import{millis}");
    let report = scenario::run(&bootstrap, &scenario::Topics::new(&prefix), &request, jobs).await?;
    println!("request {request} split into {jobs} jobs; Jobs-Completed key {}", report.key);
    println!("completion events the Notifier read: {}", report.completion_events.len());
    for event in &report.completion_events {
        println!("  {event}");
    }
    println!("value in the Jobs-Completed store: {}", report.value.unwrap_or_default());
    println!("job 0 reported again: {:?}", report.reported_again);
    Ok(())
}
