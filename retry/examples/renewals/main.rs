//! `cargo run -p retry --example renewals [-- BOOTSTRAP]`: the article's subscription renewals
//! (pattern 4, schedule-and-forget) against a running broker (`cargo xtask kafka up`). See
//! `scenario.rs` for the story.

mod scenario;

#[tokio::main]
async fn main() -> kafka_wire::Result<()> {
    let bootstrap = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9092".into());
    let outcome = scenario::run(&bootstrap, 20, 10).await?;
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
    Ok(())
}
