//! The article's schedule-and-forget example: a scheduler produces subscription renewals keyed
//! by user id and forgets them; a consumer charges each renewal through a payment provider that
//! fails 70 % of the time, retrying in place so that each user's renewals are charged in order
//! (users in parallel). Then the provider goes down for good: the renewals of that window
//! exhaust their retries and land in the dead-letter queue, and a redrive after the provider is
//! back charges them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{Admin, ClientConfig, NewTopic, OffsetReset};
use kafka_wire::{ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};
use retry::{Failed, RedriveFilter, RedriveTarget, RetryConfig, RetryControl, RetryPolicy, RetryingConsumer};

/// A payment provider that fails a share of charges, or all of them while down.
pub struct PaymentProvider {
    failure_percent: u64,
    down: AtomicBool,
    rng: AtomicU64,
    /// Charges that went through, per user, in order: renewal numbers.
    pub charged: Mutex<BTreeMap<String, Vec<u32>>>,
    pub attempts: AtomicU64,
}

impl PaymentProvider {
    pub fn new(failure_percent: u64, seed: u64) -> Self {
        Self {
            failure_percent,
            down: AtomicBool::new(false),
            rng: AtomicU64::new(seed | 1),
            charged: Mutex::default(),
            attempts: AtomicU64::new(0),
        }
    }

    fn charge(&self, user: &str, renewal: u32) -> Result<(), String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err("payment provider unavailable".into());
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        if x % 100 < self.failure_percent {
            return Err("payment provider timed out".into());
        }
        self.charged.lock().unwrap().entry(user.to_owned()).or_default().push(renewal);
        Ok(())
    }

    pub fn charged(&self) -> BTreeMap<String, Vec<u32>> {
        self.charged.lock().unwrap().clone()
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub users: usize,
    pub scheduled: usize,
    pub attempts_while_flaky: u64,
    pub charged_while_flaky: BTreeMap<String, Vec<u32>>,
    pub dead_letters_while_down: usize,
    pub charged_after_redrive: usize,
}

/// Schedules renewals `from..from + count` of every user: the scheduler's side, which forgets.
async fn schedule(bootstrap: &str, topic: &str, users: usize, from: u32, count: u32) -> kafka_wire::Result<()> {
    let producer = Producer::new(ProducerConfig::new(bootstrap)).await?;
    let mut deliveries = Vec::new();
    for n in from..from + count {
        for u in 0..users {
            let record = ProducerRecord::new(topic, n.to_string()).key(format!("user-{u}"));
            deliveries.push(producer.send(record).await?);
        }
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await
}

/// Runs a consumer of `topic` with `policy` until `done` says so (checked every 50 ms, for at
/// most a minute).
async fn consume_until(
    bootstrap: &str,
    topic: &str,
    group: &str,
    policy: RetryPolicy,
    provider: Arc<PaymentProvider>,
    done: impl Fn() -> bool,
) -> kafka_wire::Result<RetryingConsumer> {
    let consumer = ConsumerConfig::new(bootstrap).group_id(group).auto_offset_reset(OffsetReset::Earliest);
    let mut config = RetryConfig::new(consumer, topic, policy);
    config.key_parallelism = 8;
    let renewals = RetryingConsumer::new(config, move |r: ConsumerRecord| {
        let provider = provider.clone();
        async move {
            let user = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let Some(renewal) = r.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()) else {
                return Err(Failed::non_retriable("not a renewal"));
            };
            provider.charge(&user, renewal).map_err(Failed::from)
        }
    })
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(renewals.clone().run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await.map_err(|e| kafka_wire::Error::DriverFailed { driver: "renewals", reason: e.to_string() })??;
    Ok(renewals)
}

/// A fresh source topic and group name for a run.
pub fn names() -> (String, String) {
    let id = std::process::id();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    (format!("renewal-requests-{id}-{stamp}"), format!("billing-{id}-{stamp}"))
}

/// The whole story on `bootstrap`, with `users` users and `per_user` renewals each per phase.
pub async fn run(bootstrap: &str, users: usize, per_user: u32) -> kafka_wire::Result<Outcome> {
    let (topic, group) = names();
    run_on(bootstrap, topic, group, users, per_user).await
}

/// [`run`] on a source topic (created here) and a group of the caller's naming.
pub async fn run_on(
    bootstrap: &str,
    topic: String,
    group: String,
    users: usize,
    per_user: u32,
) -> kafka_wire::Result<Outcome> {
    let id = std::process::id();
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await?;
    admin.create_topics(&[NewTopic::new(topic.as_str(), 4, -1)], false).await?;
    let provider = Arc::new(PaymentProvider::new(70, u64::from(id)));
    let scheduled = users * per_user as usize;

    // A flaky provider: retried in place, per user in order, until each renewal is charged.
    schedule(bootstrap, &topic, users, 0, per_user).await?;
    let flaky = RetryPolicy::exponential(Duration::from_millis(5), 2.0, Duration::from_millis(50), None);
    let p = provider.clone();
    consume_until(bootstrap, &topic, &group, flaky, provider.clone(), move || {
        p.charged().values().map(Vec::len).sum::<usize>() >= scheduled
    })
    .await?;
    let charged_while_flaky = provider.charged();
    let attempts_while_flaky = provider.attempts.load(Ordering::Relaxed);

    // The provider goes down for good: three retries, then the dead-letter queue.
    provider.down.store(true, Ordering::Relaxed);
    schedule(bootstrap, &topic, users, per_user, per_user).await?;
    let finite = RetryPolicy::blocking([Duration::from_millis(10); 3]);
    let control = RetryControl::connect(bootstrap, &topic, &group).await?;
    let dlq = retry::TopicNames::new(&topic, &group, 0).dead_letter;
    let watch = RetryControl::connect(bootstrap, &topic, &group).await?;
    let dead = Arc::new(AtomicU64::new(0));
    let renewals = consume_until(bootstrap, &topic, &group, finite.clone(), provider.clone(), {
        let dead = dead.clone();
        move || dead.load(Ordering::Relaxed) as usize >= scheduled
    });
    // Count the dead letters while the consumer runs.
    let counting = async {
        loop {
            let n = watch.dead_letters(&dlq).await.map(|l| l.len()).unwrap_or(0);
            dead.store(n as u64, Ordering::Relaxed);
            if n >= scheduled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (renewals, ()) = tokio::join!(renewals, counting);
    renewals?;
    let dead_letters_while_down = control.dead_letters(&dlq).await?.len();

    // The provider is back: a redrive brings the dead letters back and they are charged.
    provider.down.store(false, Ordering::Relaxed);
    let before: usize = provider.charged().values().map(Vec::len).sum();
    control.redrive(&dlq, &RedriveFilter::default(), &RedriveTarget::Original, false, "renewals example").await?;
    let p = provider.clone();
    let flaky = RetryPolicy::exponential(Duration::from_millis(5), 2.0, Duration::from_millis(50), None);
    consume_until(bootstrap, &topic, &group, flaky, provider.clone(), move || {
        p.charged().values().map(Vec::len).sum::<usize>() >= before + dead_letters_while_down
    })
    .await?;
    let charged_after_redrive = provider.charged().values().map(Vec::len).sum::<usize>() - before;
    Ok(Outcome {
        users,
        scheduled,
        attempts_while_flaky,
        charged_while_flaky,
        dead_letters_while_down,
        charged_after_redrive,
    })
}
