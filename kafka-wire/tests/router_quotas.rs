//! The client's router and quota handling against an in-process fake cluster: KIP-219 throttles
//! honoured per connection, coordinators cached and looked up again when they move, KIP-580
//! backoff from `retry.backoff.ms`, requests for any broker rotating away from a broker that
//! stopped answering, and the metrics that count all of it.

#[path = "support/quota_cluster.rs"]
mod quota_cluster;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_wire::client::{Admin, Client, ClientConfig, Connection};
use kafka_wire::codec::messages::{MetadataRequest, Request};
use kafka_wire::codec::ApiKey;
use quota_cluster::{QuotaCluster, Seen};

const THROTTLE: Duration = Duration::from_millis(500);

async fn within<T>(what: &str, bound: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, f).await.unwrap_or_else(|_| panic!("timed out after {bound:?}: {what}"))
}

fn config(cluster: &QuotaCluster, request_timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new(&cluster.addr(1));
    config.connection.request_timeout = request_timeout;
    config.connection.connect_timeout = Duration::from_secs(5);
    config
}

fn brokers_only() -> MetadataRequest {
    MetadataRequest { topics: Some(vec![]), ..Default::default() }
}

/// The answer node `seen` reported a throttle in, and the requests the node read after it.
/// A 1-node fake cluster, a client connected to it with `request_timeout`, and its connection
/// to node 1, whose next answer reports a [`THROTTLE`].
async fn throttling_next_answer(request_timeout: Duration) -> (QuotaCluster, Client, std::sync::Arc<Connection>) {
    let cluster = QuotaCluster::start(1).await;
    let client = within("connect", Duration::from_secs(10), Client::connect(config(&cluster, request_timeout)))
        .await
        .expect("connect");
    let conn = client.broker(1).await.expect("node 1");
    cluster.node(1).throttle_next_ms.store(THROTTLE.as_millis() as i32, Ordering::Release);
    (cluster, client, conn)
}

fn after_throttle(seen: &[Seen]) -> (Instant, Vec<Seen>) {
    let i = seen.iter().position(|s| s.throttle_ms > 0).expect("a throttled answer");
    (seen[i].answered.expect("the throttled request was answered"), seen[i + 1..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_broker_is_sent_nothing_until_the_throttle_ends_and_others_are_not_held() {
    let cluster = QuotaCluster::start(2).await;
    let client = within("connect", Duration::from_secs(10), Client::connect(config(&cluster, Duration::from_secs(10))))
        .await
        .expect("connect");
    client.broker(1).await.expect("node 1");
    client.broker(2).await.expect("node 2");
    cluster.node(1).throttle_next_ms.store(THROTTLE.as_millis() as i32, Ordering::Release);
    let throttled = client.send(1, &brokers_only()).await.expect("throttled answer");
    assert_eq!(throttled.throttle_time_ms, 500);
    let request = brokers_only();
    let (to_1, to_2) = within("the requests after the throttle", Duration::from_secs(10), async {
        tokio::join!(client.send(1, &request), client.send(2, &request))
    })
    .await;
    to_1.expect("node 1 answers after the throttle");
    to_2.expect("node 2 answers");

    let (answered, later) = after_throttle(&cluster.node(1).seen());
    assert_eq!(later.len(), 1, "node 1 read one request after the throttled answer: {later:?}");
    let waited = later[0].received - answered;
    assert!(waited >= THROTTLE, "node 1 got a request {waited:?} after a {THROTTLE:?} throttle");
    let to_node_2 = cluster.node(2).seen().last().expect("node 2 saw the request").received;
    eprintln!(
        "after the throttled answer: node 1's next request came {waited:?} later, node 2's {:?}",
        to_node_2.saturating_duration_since(answered)
    );
    assert!(to_node_2 < later[0].received, "the request to node 2 waited for node 1's throttle");

    let metrics = client.metrics();
    let node_1 = metrics.broker(1).expect("node 1 metrics");
    assert_eq!((node_1.throttled_responses, node_1.throttle_time), (1, THROTTLE));
    assert_eq!(metrics.broker(2).expect("node 2 metrics").throttled_responses, 0);
}

/// A throttle binds the connection whoever asked: the answer to a request whose caller gave up
/// (a dropped `select!` branch, a timeout) still holds the connection's later requests (it
/// used to be discarded unread, so the client kept sending into the quota).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_in_the_answer_to_an_abandoned_request_still_holds_the_connection() {
    let (cluster, client, conn) = throttling_next_answer(Duration::from_secs(10)).await;
    let version = conn.version_for::<MetadataRequest>().expect("Metadata");
    let request = brokers_only();
    // Dropped before its answer comes, as a rule; under load the answer can reach the handle
    // first (see the regression test below, which makes that happen every time).
    drop(conn.submit(&request, version).expect("submitted"));
    // Answered after the abandoned one (one connection answers in order), so its throttle is
    // known by then; it was sent before or after that answer, depending on timing.
    within("a request behind the abandoned one", Duration::from_secs(10), client.send(1, &brokers_only()))
        .await
        .expect("answered");
    within("a request after the throttle", Duration::from_secs(10), client.send(1, &brokers_only()))
        .await
        .expect("answered after the throttle");

    let (answered, later) = after_throttle(&cluster.node(1).seen());
    let last = later.last().expect("requests after the throttled one");
    assert!(
        last.received - answered >= THROTTLE,
        "the request after the throttle came {:?} after a {THROTTLE:?} throttle",
        last.received - answered
    );
    let metrics = client.metrics();
    let node_1 = metrics.broker(1).expect("node 1 metrics");
    assert_eq!((node_1.throttled_responses, node_1.in_flight), (1, 0));
}

/// Regression: the answer to a request can reach its handle before the caller drops the handle
/// unread (a pipelined request whose caller gave up, a `select!` that took another branch, a
/// caller descheduled right after submitting): its throttle still holds the connection. The
/// reader had handed the frame to the handle and forgotten the request, and the dropped handle
/// discarded the frame with its throttle, so the next requests went out at once (seen under
/// load in the test above: a request 279 µs after a 500 ms throttle). Here the answer is
/// delivered before the drop every time: the connection answers in order, so once the request
/// after it is answered, the throttled answer has been handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_throttled_answer_handed_to_a_handle_dropped_unread_still_holds_the_connection() {
    let (cluster, client, conn) = throttling_next_answer(Duration::from_secs(10)).await;
    let version = conn.version_for::<MetadataRequest>().expect("Metadata");
    let throttled = conn.submit(&brokers_only(), version).expect("submitted");
    let behind = conn.submit(&brokers_only(), version).expect("submitted");
    within("the request behind the throttled one", Duration::from_secs(10), behind.response()).await.expect("answered");
    drop(throttled);
    within("a request after the throttle", Duration::from_secs(10), client.send(1, &brokers_only()))
        .await
        .expect("answered after the throttle");

    let (answered, later) = after_throttle(&cluster.node(1).seen());
    assert_eq!(later.len(), 2, "the request behind the throttled one, then the one after: {later:?}");
    let waited = later[1].received - answered;
    assert!(waited >= THROTTLE, "the request after the throttle came {waited:?} after a {THROTTLE:?} throttle");
    let metrics = client.metrics();
    let node_1 = metrics.broker(1).expect("node 1 metrics");
    assert_eq!((node_1.throttled_responses, node_1.in_flight), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_waiting_out_a_throttle_is_never_sent() {
    let (cluster, client, conn) = throttling_next_answer(Duration::from_secs(10)).await;
    client.send(1, &brokers_only()).await.expect("throttled answer");
    assert!(conn.throttled_until().is_some(), "the connection is throttled");
    let dropped = tokio::time::timeout(Duration::from_millis(50), client.send(1, &brokers_only())).await;
    assert!(dropped.is_err(), "the request waited for the throttle, and was dropped");
    within("a request after the throttle", Duration::from_secs(10), client.send(1, &brokers_only()))
        .await
        .expect("answered after the throttle");

    let (answered, later) = after_throttle(&cluster.node(1).seen());
    assert_eq!(later.len(), 1, "only the request that was not dropped reached the broker: {later:?}");
    assert!(later[0].received - answered >= THROTTLE);
    assert_eq!(conn.in_flight(), 0, "nothing is left waiting on the connection");
    assert_eq!(client.metrics().broker(1).expect("node 1").in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_submitted_during_a_throttle_are_held_and_time_out_from_its_end() {
    // A request timeout shorter than the throttle: counted from the submission, the held
    // request would time out before it is even written.
    let timeout = Duration::from_millis(400);
    let (cluster, _client, conn) = throttling_next_answer(timeout).await;
    conn.send(&brokers_only()).await.expect("throttled answer");
    let version = conn.version_for::<MetadataRequest>().expect("metadata version");
    assert!(version >= 6, "Metadata v{version} is throttled by the client");
    let pending = conn.submit(&brokers_only(), version).expect("submitted");
    within("the held request", Duration::from_secs(10), pending.response())
        .await
        .expect("answered, not timed out, after the throttle");
    let (answered, later) = after_throttle(&cluster.node(1).seen());
    assert_eq!(later.len(), 1);
    assert!(later[0].received - answered >= THROTTLE, "the writer held the frame until the throttle ended");
    assert_eq!(MetadataRequest::API_KEY, later[0].api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_are_cached_and_looked_up_again_when_they_move() {
    let cluster = QuotaCluster::start(2).await;
    let config =
        config(&cluster, Duration::from_secs(10)).retry_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let client = within("connect", Duration::from_secs(10), Client::connect(config)).await.expect("connect");
    let admin = Admin::new(client.clone()).with_timeout(Duration::from_secs(10));
    let lookups = || cluster.node(1).count(ApiKey::FIND_COORDINATOR) + cluster.node(2).count(ApiKey::FIND_COORDINATOR);

    for _ in 0..3 {
        within("offsets", Duration::from_secs(10), admin.list_group_offsets("g", None)).await.expect("offsets");
    }
    assert_eq!(lookups(), 1, "the coordinator is looked up once and cached");
    assert_eq!(cluster.node(1).count(ApiKey::OFFSET_FETCH), 3);

    // The coordinator says it is not, once: the router looks it up again and retries.
    cluster.node(1).not_coordinator.store(1, Ordering::Release);
    within("offsets", Duration::from_secs(10), admin.list_group_offsets("g", None)).await.expect("offsets");
    assert_eq!(lookups(), 2);
    assert_eq!(cluster.node(1).count(ApiKey::OFFSET_FETCH), 5);

    // The group moves to node 2: node 1 answers NOT_COORDINATOR, and the next lookup finds 2.
    cluster.set_coordinator(2);
    within("offsets", Duration::from_secs(10), admin.list_group_offsets("g", None)).await.expect("offsets");
    assert_eq!(lookups(), 3);
    assert_eq!(cluster.node(2).count(ApiKey::OFFSET_FETCH), 1);
    within("offsets", Duration::from_secs(10), admin.list_group_offsets("g", None)).await.expect("offsets");
    assert_eq!((lookups(), cluster.node(2).count(ApiKey::OFFSET_FETCH)), (3, 2), "node 2 is cached");

    let metrics = client.metrics();
    assert_eq!(metrics.coordinator_lookups, 3);
    assert_eq!(metrics.retries, 2, "one retry per NOT_COORDINATOR");
    assert_eq!(metrics.broker(1).expect("node 1").retries, 0, "NOT_COORDINATOR is an answer, not a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_for_many_groups_are_one_request() {
    let cluster = QuotaCluster::start(1).await;
    let admin = within("connect", Duration::from_secs(10), Admin::connect(config(&cluster, Duration::from_secs(10))))
        .await
        .expect("connect");
    let groups = ["a", "b", "c"];
    let found = admin.find_coordinators(&groups, kafka_wire::client::CoordinatorType::Group).await.expect("found");
    assert_eq!(found.len(), 3);
    let lookups: Vec<Seen> = cluster.node(1).seen().into_iter().filter(|s| s.api == ApiKey::FIND_COORDINATOR).collect();
    assert_eq!(lookups.len(), 1, "one FindCoordinator for three groups");
    assert_eq!(lookups[0].keys, groups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_retries_wait_the_configured_exponential_backoff() {
    let cluster = QuotaCluster::start(1).await;
    let base = Duration::from_millis(200);
    let config = config(&cluster, Duration::from_secs(10)).retry_backoff(base, Duration::from_secs(5));
    let admin = within("connect", Duration::from_secs(10), Admin::connect(config))
        .await
        .expect("connect")
        .with_timeout(Duration::from_secs(20));
    cluster.node(1).not_coordinator.store(3, Ordering::Release);
    within("offsets", Duration::from_secs(20), admin.list_group_offsets("g", None)).await.expect("offsets");
    let fetches: Vec<Instant> =
        cluster.node(1).seen().into_iter().filter(|s| s.api == ApiKey::OFFSET_FETCH).map(|s| s.received).collect();
    assert_eq!(fetches.len(), 4, "three NOT_COORDINATOR answers, then the offsets");
    let gaps: Vec<Duration> = fetches.windows(2).map(|p| p[1] - p[0]).collect();
    eprintln!("gaps between the attempts: {gaps:?}");
    for (i, pair) in fetches.windows(2).enumerate() {
        // retry.backoff.ms doubled per attempt, less at most 20 % of jitter (KIP-580).
        let least = base.mul_f64(0.8) * (1 << i);
        assert!(
            pair[1] - pair[0] >= least,
            "retry {i} came {:?} after the last, less than {least:?}",
            pair[1] - pair[0]
        );
    }
    assert_eq!(admin.client().metrics().retries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_any_broker_rotate_away_from_a_broker_that_stopped_answering() {
    let cluster = QuotaCluster::start(2).await;
    let config =
        config(&cluster, Duration::from_millis(500)).retry_backoff(Duration::from_millis(10), Duration::from_secs(1));
    let admin = within("connect", Duration::from_secs(10), Admin::connect(config))
        .await
        .expect("connect")
        .with_timeout(Duration::from_secs(10));
    admin.client().broker(1).await.expect("node 1");
    admin.client().broker(2).await.expect("node 2");
    // Node 1 stops: its connections stay open and new ones are accepted, but nothing is
    // answered, ApiVersions included.
    cluster.node(1).silent.store(true, Ordering::Release);
    for _ in 0..3 {
        let d = within("describe cluster", Duration::from_secs(15), admin.describe_cluster())
            .await
            .expect("another broker answers");
        assert_eq!(d.brokers.len(), 2);
    }
    assert_eq!(cluster.node(2).count(ApiKey::DESCRIBE_CLUSTER), 3);
    let node_1 = admin.client().metrics();
    let node_1 = node_1.broker(1).expect("node 1 metrics");
    assert!(node_1.request_errors >= 1, "node 1's silence was counted: {node_1:?}");
    assert!(
        cluster.node(1).count(ApiKey::API_VERSIONS) + cluster.node(1).count(ApiKey::DESCRIBE_CLUSTER) <= 3,
        "node 1 was tried again and again: {:?}",
        cluster.node(1).seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_broker_passes_over_a_connection_whose_requests_go_unanswered_for_seconds() {
    let cluster = QuotaCluster::start(2).await;
    let client = within("connect", Duration::from_secs(10), Client::connect(config(&cluster, Duration::from_secs(60))))
        .await
        .expect("connect");
    let node_1 = client.broker(1).await.expect("node 1");
    let node_2 = client.broker(2).await.expect("node 2");
    // Node 1 stops with one request in flight.
    cluster.node(1).silent.store(true, Ordering::Release);
    let stuck = node_1.submit(&brokers_only(), 6).expect("submitted");
    // What makes node 1 stuck is time passing without an answer: no event to await.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Node 2 is busy, not stuck: two requests in flight, sent just now.
    cluster.node(2).silent.store(true, Ordering::Release);
    let busy =
        [node_2.submit(&brokers_only(), 6).expect("submitted"), node_2.submit(&brokers_only(), 6).expect("submitted")];
    within("node 2 read both", Duration::from_secs(10), async {
        // The fake broker's log has no event to await.
        while cluster.node(2).count(ApiKey::METADATA) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!((node_1.in_flight(), node_2.in_flight()), (1, 2));
    let chosen = client.any_broker().await.expect("a broker");
    assert_eq!(chosen.addr(), cluster.addr(2), "the stuck broker was chosen over the busy one");
    drop((stuck, busy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_connection_fails_is_looked_up_again() {
    let cluster = QuotaCluster::start(2).await;
    let config = config(&cluster, Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let client = within("connect", Duration::from_secs(10), Client::connect(config)).await.expect("connect");
    let admin = Admin::new(client.clone()).with_timeout(Duration::from_secs(10));
    within("offsets", Duration::from_secs(10), admin.list_group_offsets("g", None)).await.expect("node 1 answers");
    // Node 1 stops, and the cluster moves the group to node 2.
    cluster.node(1).silent.store(true, Ordering::Release);
    cluster.set_coordinator(2);
    within("offsets", Duration::from_secs(15), admin.list_group_offsets("g", None))
        .await
        .expect("the new coordinator answers");
    assert_eq!(cluster.node(2).count(ApiKey::OFFSET_FETCH), 1);
    assert_eq!(cluster.node(1).count(ApiKey::OFFSET_FETCH), 2, "one answered, one timed out; not tried again");
    let metrics = client.metrics();
    assert!(metrics.broker(1).expect("node 1").retries >= 1, "the retry is counted against node 1: {metrics:?}");
}
