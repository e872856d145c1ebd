//! The renewals example (`cargo run -p retry --example renewals`) as a test: with a payment
//! provider failing 70 % of charges every renewal is charged once, each user's in order; with
//! the provider down the renewals land in the dead-letter queue, and a redrive charges them.

#[path = "../../retry/examples/renewals/scenario.rs"]
mod scenario;

use kafka_wire_tests::bootstrap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_renewal_is_charged_once_in_order_per_user_and_the_dead_letters_after_a_redrive() {
    const USERS: usize = 12;
    const PER_USER: u32 = 8;
    let outcome = scenario::run(&bootstrap(), USERS, PER_USER).await.unwrap();
    assert_eq!((outcome.users, outcome.scheduled), (USERS, USERS * PER_USER as usize));
    assert_eq!(outcome.charged_while_flaky.len(), USERS, "a user was never charged");
    for (user, renewals) in &outcome.charged_while_flaky {
        assert_eq!(*renewals, (0..PER_USER).collect::<Vec<_>>(), "{user}: renewals missing, repeated or out of order");
    }
    assert!(
        outcome.attempts_while_flaky > outcome.scheduled as u64,
        "the provider never failed: {} attempts",
        outcome.attempts_while_flaky
    );
    assert_eq!(outcome.dead_letters_while_down, outcome.scheduled);
    assert_eq!(outcome.charged_after_redrive, outcome.scheduled);
}
