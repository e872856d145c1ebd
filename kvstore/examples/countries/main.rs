//! `cargo run -p kvstore --example countries [-- BOOTSTRAP [COUNTRIES_TOPIC TIME_ZONES_TOPIC]]`:
//! the article's in-memory KV stores (pattern 3) against a running broker (`cargo xtask kafka
//! up`). See `scenario.rs` for the story.

mod scenario;

#[tokio::main]
async fn main() -> kvstore::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let countries = args.next().unwrap_or_else(|| "countries".into());
    let time_zones = args.next().unwrap_or_else(|| "time-zones".into());
    let outcome = scenario::run(&bootstrap, &countries, &time_zones).await?;
    println!("Business Manager's countries ({countries}):");
    for (code, name) in &outcome.countries {
        println!("  {code}  {name}");
    }
    println!("Events' time zones ({time_zones}):");
    for (code, zone) in &outcome.events_time_zones {
        println!("  {code}  {zone}");
    }
    println!("South Sudan's time zone reached Events: {}", outcome.south_sudan);
    Ok(())
}
