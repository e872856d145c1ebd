//! TLS and SASL against the secured listeners of the 1-node cluster (`cargo xtask kafka up
//! --security`): produce, consume with a group and a transaction over each listener and
//! mechanism, Kafka's console consumer reading over TLS, and the failures: each a typed error
//! naming its cause, within the configured timeouts, with no password in it.

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::client::{
    BoxStream, Client, Consumer, ConsumerConfig, DialFuture, Dialer, Error, ErrorKind, OAuthBearerToken, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, SaslConfig,
};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, kafka_tool, secured_listeners, unique_topic, SecuredListeners};

/// How long a whole round trip (topic, produce, transaction, group consume) may take.
const ROUND_TRIP: Duration = Duration::from_secs(90);
/// How long a failing connect may take: the configured connect and request timeouts (5 s each)
/// and a margin for a loaded machine.
const FAILURE: Duration = Duration::from_secs(30);
/// A password no listener knows.
const WRONG: &str = "not-the-password-42";

type Props = Vec<(&'static str, String)>;

fn scram_jaas(user: &str, password: &str) -> String {
    format!(
        r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";"#
    )
}

fn plain_jaas(user: &str, password: &str) -> String {
    format!(
        r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" password="{password}";"#
    )
}

/// Properties for a SASL listener with `mechanism`.
fn sasl(l: &SecuredListeners, protocol: &str, mechanism: &str, user: &str, password: &str) -> Props {
    let jaas = if mechanism == "PLAIN" { plain_jaas(user, password) } else { scram_jaas(user, password) };
    let bootstrap = if protocol == "SASL_SSL" { &l.sasl_ssl } else { &l.sasl_plaintext };
    let mut p = vec![
        ("bootstrap.servers", bootstrap.clone()),
        ("security.protocol", protocol.into()),
        ("sasl.mechanism", mechanism.into()),
        ("sasl.jaas.config", jaas),
    ];
    if protocol == "SASL_SSL" {
        p.push(("ssl.ca.location", l.ca.display().to_string()));
    }
    p
}

fn ssl(l: &SecuredListeners) -> Props {
    vec![
        ("bootstrap.servers", l.ssl.clone()),
        ("security.protocol", "SSL".into()),
        ("ssl.truststore.type", "PEM".into()),
        ("ssl.truststore.location", l.ca.display().to_string()),
    ]
}

fn mtls(l: &SecuredListeners) -> Props {
    vec![
        ("bootstrap.servers", l.mtls.clone()),
        ("security.protocol", "SSL".into()),
        ("ssl.ca.location", l.ca.display().to_string()),
        ("ssl.certificate.location", l.client_cert.display().to_string()),
        ("ssl.key.location", l.client_key.display().to_string()),
    ]
}

fn producer_config(props: &Props, extra: &[(&str, &str)]) -> ProducerConfig {
    let all = props.iter().map(|(k, v)| (*k, v.as_str())).chain(extra.iter().copied());
    ProducerConfig::from_properties(all).expect("producer properties")
}

fn consumer_config(props: &Props, group: &str) -> ConsumerConfig {
    let all = props.iter().map(|(k, v)| (*k, v.as_str())).chain([("group.id", group)]);
    ConsumerConfig::from_properties(all).expect("consumer properties").auto_offset_reset(OffsetReset::Earliest)
}

/// Creates a topic, produces 3 records, commits a transaction of 2 more, and reads all 5 back
/// with a consumer group that commits its offsets: every connection over the listener of
/// `props`. Returns the topic.
async fn round_trip(what: &str, props: Props) -> String {
    let topic = unique_topic(&format!("security-{}", what.to_ascii_lowercase().replace('_', "-")));
    let work = async {
        let config = producer_config(&props, &[]);
        let client = Client::connect(config.client_config()).await.expect("connect");
        create_topic(&client, &topic, 1, 1, &[]).await;
        client.close().await;

        let producer = Producer::new(config).await.expect("producer");
        for i in 0..3 {
            producer.send(ProducerRecord::new(&topic, format!("plain-{i}"))).await.unwrap().await.unwrap();
        }
        producer.close().await.unwrap();

        let transactional = Producer::new(producer_config(&props, &[("transactional.id", &topic)])).await.unwrap();
        transactional.init_transactions().await.unwrap();
        transactional.begin_transaction().unwrap();
        let mut acks = Vec::new();
        for i in 0..2 {
            acks.push(transactional.send(ProducerRecord::new(&topic, format!("txn-{i}"))).await.unwrap());
        }
        transactional.commit_transaction().await.unwrap();
        for a in acks {
            a.await.unwrap();
        }
        transactional.close().await.unwrap();

        let consumer = Consumer::new(consumer_config(&props, &topic)).await.expect("consumer");
        consumer.subscribe([topic.clone()]).unwrap();
        let mut values = Vec::new();
        while values.len() < 5 {
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            }
        }
        consumer.commit().await.unwrap();
        consumer.close().await.unwrap();
        values
    };
    let values = tokio::time::timeout(ROUND_TRIP, work)
        .await
        .unwrap_or_else(|_| panic!("{what}: the round trip did not finish within {ROUND_TRIP:?}"));
    assert_eq!(values, ["plain-0", "plain-1", "plain-2", "txn-0", "txn-1"], "{what}");
    topic
}

#[tokio::test]
async fn produce_consume_and_transact_over_sasl_plaintext_with_each_mechanism() {
    let Some(l) = secured_listeners("sasl_plaintext") else { return };
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        round_trip(mechanism, sasl(&l, "SASL_PLAINTEXT", mechanism, &l.username, &l.password)).await;
    }
}

#[tokio::test]
async fn produce_consume_and_transact_over_ssl_and_the_console_consumer_reads_it() {
    let Some(l) = secured_listeners("ssl") else { return };
    let topic = round_trip("SSL", ssl(&l)).await;
    let truststore = format!("ssl.truststore.location={}", l.ca.display());
    let out = tokio::task::spawn_blocking(move || {
        kafka_tool(
            "console-consumer",
            &[
                "--bootstrap-server",
                &l.ssl,
                "--topic",
                &topic,
                "--from-beginning",
                "--max-messages",
                "5",
                "--timeout-ms",
                "60000",
                "--consumer-property",
                "security.protocol=SSL",
                "--consumer-property",
                "ssl.truststore.type=PEM",
                "--consumer-property",
                &truststore,
            ],
            None,
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console consumer failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["plain-0", "plain-1", "plain-2", "txn-0", "txn-1"]);
}

#[tokio::test]
async fn produce_consume_and_transact_over_sasl_ssl_with_each_mechanism() {
    let Some(l) = secured_listeners("sasl_ssl") else { return };
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        round_trip(&format!("SASL_SSL-{mechanism}"), sasl(&l, "SASL_SSL", mechanism, &l.username, &l.password)).await;
    }
}

#[tokio::test]
async fn produce_consume_and_transact_over_mutual_tls() {
    let Some(l) = secured_listeners("mtls") else { return };
    round_trip("MTLS", mtls(&l)).await;
}

/// The cause of a failed connect (the bootstrap's error, unwrapped from "no broker reachable"),
/// after checking that it came within [`FAILURE`] and that no rendering of it (nor of the
/// configuration) holds `secret`.
async fn connect_error(what: &str, mut config: kafka_wire::client::ClientConfig, secret: Option<&str>) -> Error {
    let secret = secret.unwrap_or("\u{0}no secret\u{0}");
    config.connection.connect_timeout = Duration::from_secs(5);
    config.connection.request_timeout = Duration::from_secs(5);
    assert!(!format!("{config:?}").contains(secret), "{what}: the configuration's Debug shows the password");
    let result = tokio::time::timeout(FAILURE, Client::connect(config))
        .await
        .unwrap_or_else(|_| panic!("{what}: connecting neither succeeded nor failed within {FAILURE:?}"));
    let error = match result {
        Ok(_) => panic!("{what}: connected"),
        Err(Error::Unreachable { last, .. }) => *last,
        Err(e) => e,
    };
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(secret), "{what}: the error shows the password: {shown}");
    }
    error
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_authentication_errors_with_the_brokers_reason() {
    let Some(l) = secured_listeners("wrong_credentials") else { return };
    let cases = [
        ("SCRAM-SHA-256", l.username.as_str(), WRONG),
        ("SCRAM-SHA-512", "nobody", WRONG),
        ("PLAIN", l.username.as_str(), WRONG),
        ("PLAIN", "nobody", WRONG),
    ];
    for (mechanism, user, password) in cases {
        let what = format!("{mechanism} as {user}");
        let config = producer_config(&sasl(&l, "SASL_PLAINTEXT", mechanism, user, password), &[]).client_config();
        let error = connect_error(&what, config, Some(password)).await;
        match &error {
            Error::Authentication { mechanism: m, reason, .. } => {
                assert_eq!(m, mechanism, "{what}");
                assert!(reason.contains("Authentication failed"), "{what}: {reason}");
            }
            other => panic!("{what}: expected an authentication error, got {other:?}"),
        }
        assert_eq!(error.kind(), ErrorKind::Security);
        assert!(!error.is_retriable(), "{what}");
    }
}

fn tls_reason(what: &str, error: &Error) -> String {
    match error {
        Error::Tls { reason, .. } => reason.clone(),
        other => panic!("{what}: expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_broker_certificate_is_a_tls_error() {
    let Some(l) = secured_listeners("untrusted") else { return };
    let mut props = sasl(&l, "SASL_SSL", "SCRAM-SHA-512", &l.username, &l.password);
    props.retain(|(k, _)| *k != "ssl.ca.location");
    props.push(("ssl.ca.location", l.other_ca.display().to_string()));
    let error = connect_error("untrusted CA", producer_config(&props, &[]).client_config(), Some(&l.password)).await;
    let reason = tls_reason("untrusted CA", &error);
    assert!(reason.contains("UnknownIssuer") && reason.contains("ssl.ca.location"), "{reason}");
}

/// Dials `from` at `to`: a broker reached under a name its certificate does not carry.
#[derive(Debug)]
struct Route {
    from: String,
    to: String,
}

impl Dialer for Route {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let target = if addr == self.from { self.to.as_str() } else { addr };
            let stream = tokio::net::TcpStream::connect(target).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused_unless_verification_is_off() {
    let Some(l) = secured_listeners("wrong_host") else { return };
    let port = l.ssl.rsplit_once(':').unwrap().1;
    let wrong = format!("broker.invalid:{port}");
    let mut props = ssl(&l);
    props[0].1 = wrong.clone();
    let route = Arc::new(Route { from: wrong.clone(), to: l.ssl.clone() });

    let mut config = producer_config(&props, &[]).client_config();
    config.connection.security.dialer = Some(route.clone());
    let error = connect_error("wrong host", config, None).await;
    let reason = tls_reason("wrong host", &error);
    assert!(reason.contains("not valid for name") && reason.contains("broker.invalid"), "{reason}");

    // With the check off (`ssl.endpoint.identification.algorithm=`), the chain is still
    // verified and the connection works.
    props.push(("ssl.endpoint.identification.algorithm", String::new()));
    let mut config = producer_config(&props, &[]).client_config();
    config.connection.security.dialer = Some(route);
    let client = tokio::time::timeout(FAILURE, Client::connect(config)).await.expect("connect in time").unwrap();
    assert_eq!(client.brokers().len(), 1);
    client.close().await;
}

#[tokio::test]
async fn a_missing_client_certificate_where_one_is_required_is_a_tls_error() {
    let Some(l) = secured_listeners("no_client_cert") else { return };
    let mut props = mtls(&l);
    props.retain(|(k, _)| !matches!(*k, "ssl.certificate.location" | "ssl.key.location"));
    let error = connect_error("no client certificate", producer_config(&props, &[]).client_config(), None).await;
    let reason = tls_reason("no client certificate", &error);
    assert!(reason.contains("client certificate"), "{reason}");
}

#[tokio::test]
async fn plaintext_clients_on_tls_or_sasl_ports_and_tls_or_sasl_clients_on_a_plaintext_port_fail_fast_with_a_hint() {
    let Some(l) = secured_listeners("wrong_protocol") else { return };
    let plaintext = vec![("bootstrap.servers", l.ssl.clone())];
    let error = connect_error("plaintext on TLS", producer_config(&plaintext, &[]).client_config(), None).await;
    let reason = tls_reason("plaintext on TLS", &error);
    assert!(reason.contains("security.protocol"), "{reason}");

    let mut tls = ssl(&l);
    tls[0].1 = bootstrap();
    let error = connect_error("TLS on plaintext", producer_config(&tls, &[]).client_config(), None).await;
    let reason = tls_reason("TLS on plaintext", &error);
    assert!(reason.contains("TLS listener"), "{reason}");

    // A SASL listener answers ApiVersions, then closes the connection at the next request.
    let plaintext = vec![("bootstrap.servers", l.sasl_plaintext.clone())];
    let error = connect_error("plaintext on SASL", producer_config(&plaintext, &[]).client_config(), None).await;
    assert!(error.to_string().contains("is this a SASL listener"), "plaintext on SASL: {error:?}");

    let mut sasl_on_plaintext = sasl(&l, "SASL_PLAINTEXT", "SCRAM-SHA-256", &l.username, &l.password);
    sasl_on_plaintext[0].1 = bootstrap();
    let config = producer_config(&sasl_on_plaintext, &[]).client_config();
    let error = connect_error("SASL on plaintext", config, Some(&l.password)).await;
    assert!(
        matches!(&error, Error::Authentication { reason, .. } if reason.contains("is this a SASL listener")),
        "SASL on plaintext: {error:?}"
    );
}

#[tokio::test]
async fn without_a_ca_location_the_system_trust_store_is_used() {
    let Some(l) = secured_listeners("system_store") else { return };
    // rustls-native-certs reads the system's store from SSL_CERT_FILE when it is set: the test
    // CA stands in for the system's. No other test of this binary reads the system's store.
    std::env::set_var("SSL_CERT_FILE", &l.ca);
    let props = vec![("bootstrap.servers", l.ssl.clone()), ("security.protocol", "SSL".into())];
    let client = tokio::time::timeout(FAILURE, Client::connect(producer_config(&props, &[]).client_config()))
        .await
        .expect("connect in time")
        .expect("the system store (SSL_CERT_FILE) trusts the broker");
    assert_eq!(client.brokers().len(), 1);
    client.close().await;
}

fn oauth_jaas(subject: &str) -> String {
    format!(
        r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="{subject}";"#
    )
}

/// Properties for the OAUTHBEARER listener (SASL_SSL) with unsecured tokens for `subject`.
fn oauth(l: &SecuredListeners, bootstrap: &str, subject: &str) -> Props {
    vec![
        ("bootstrap.servers", bootstrap.to_owned()),
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("sasl.jaas.config", oauth_jaas(subject)),
        ("ssl.ca.location", l.ca.display().to_string()),
    ]
}

#[tokio::test]
async fn produce_consume_and_transact_over_sasl_ssl_with_oauthbearer() {
    let Some(l) = secured_listeners("oauthbearer") else { return };
    let Some(listener) = l.oauth.clone() else {
        eprintln!("[oauthbearer] skipped: the cluster has no OAUTHBEARER listener (restart it with --security)");
        return;
    };
    round_trip("OAUTHBEARER", oauth(&l, &listener, &l.username)).await;
}

#[tokio::test]
async fn an_expired_token_is_an_authentication_error_that_says_so() {
    let Some(l) = secured_listeners("expired_token") else { return };
    let Some(listener) = l.oauth.clone() else {
        eprintln!("[expired_token] skipped: the cluster has no OAUTHBEARER listener (restart it with --security)");
        return;
    };
    // Issued two hours ago, valid for one.
    let issued = std::time::SystemTime::now() - Duration::from_secs(7200);
    let token = OAuthBearerToken::unsecured(&l.username, issued, Duration::from_secs(3600));
    let secret = token.expose().to_owned();
    let mut config = producer_config(&oauth(&l, &listener, &l.username), &[]).client_config();
    config.connection.security.sasl = SaslConfig::default().token_provider(move || {
        let token = token.clone();
        async move { Ok(token) }
    });
    let error = connect_error("expired token", config, Some(&secret)).await;
    match &error {
        Error::Authentication { mechanism, reason, .. } => {
            assert_eq!(mechanism, "OAUTHBEARER");
            assert!(reason.contains("invalid_token") && reason.contains("the token expired"), "{reason}");
        }
        other => panic!("expired token: expected an authentication error, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Security);
    assert!(!error.is_retriable());
}

#[tokio::test]
async fn a_producer_with_a_wrong_password_fails_fast_with_a_security_error() {
    let Some(l) = secured_listeners("fail_fast") else { return };
    // Long timeouts: a failure that were retried would take them.
    let props = sasl(&l, "SASL_PLAINTEXT", "SCRAM-SHA-512", &l.username, WRONG);
    let config = producer_config(&props, &[("delivery.timeout.ms", "120000"), ("request.timeout.ms", "60000")]);
    let started = std::time::Instant::now();
    let attempt = async {
        let producer = Producer::new(config).await?;
        producer.send(ProducerRecord::new("security-fail-fast", "x")).await?.await
    };
    let error = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .expect("the producer neither failed nor delivered within 20 s")
        .expect_err("delivered with a wrong password");
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Security, "{error:?}");
    assert!(!error.is_retriable(), "{error:?}");
    assert!(error.to_string().contains("authentication"), "{error}");
    assert!(!error.to_string().contains(WRONG) && !format!("{error:?}").contains(WRONG));
    // Well under the timeouts (60 s, 120 s): one exchange, no retries.
    assert!(took < Duration::from_secs(20), "took {took:?}");

    let config = ConsumerConfig::from_properties(
        props.iter().map(|(k, v)| (*k, v.as_str())).chain([("group.id", "security-fail-fast")]),
    )
    .unwrap();
    let attempt = async {
        let consumer = Consumer::new(config).await?;
        consumer.subscribe(["security-fail-fast"])?;
        consumer.poll(Duration::from_secs(1)).await
    };
    let error = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .expect("the consumer neither failed nor polled within 20 s")
        .expect_err("polled with a wrong password");
    assert_eq!(error.kind(), ErrorKind::Security, "{error:?}");
    assert!(!error.is_retriable(), "{error:?}");
}

/// The re-authentications and the connections opened, summed over `client`'s connections.
fn sessions(client: &Client) -> (u64, u64) {
    let m = client.metrics();
    (m.brokers.iter().map(|b| b.reauthentications).sum(), m.connections_opened())
}

#[tokio::test]
async fn a_producer_and_a_consumer_keep_working_across_reauthentications() {
    let Some(l) = secured_listeners("reauth") else { return };
    let Some(listener) = l.reauth.clone() else {
        eprintln!("[reauth] skipped: the cluster has no re-authenticating listener (restart it with --security)");
        return;
    };
    let topic = unique_topic("security-reauth");
    // The producer authenticates with SCRAM-SHA-256, the consumer with OAUTHBEARER.
    let scram = vec![
        ("bootstrap.servers", listener.clone()),
        ("security.protocol", "SASL_PLAINTEXT".to_owned()),
        ("sasl.mechanism", "SCRAM-SHA-256".into()),
        ("sasl.jaas.config", scram_jaas(&l.username, &l.password)),
    ];
    let bearer = vec![
        ("bootstrap.servers", listener.clone()),
        ("security.protocol", "SASL_PLAINTEXT".to_owned()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("sasl.jaas.config", oauth_jaas(&l.username)),
    ];
    let work = async {
        let producer = Producer::new(producer_config(&scram, &[])).await.expect("producer");
        create_topic(producer.client(), &topic, 1, 1, &[]).await;
        let consumer = Consumer::new(consumer_config(&bearer, &topic)).await.expect("consumer");
        consumer.subscribe([topic.clone()]).unwrap();
        let (mut sent, mut received) = (0u32, Vec::new());
        let mut opened = None;
        // Produce and consume until both clients have re-authenticated at least 3 times (the
        // listener's sessions last 4 s).
        loop {
            producer.send(ProducerRecord::new(&topic, sent.to_string())).await.unwrap().await.unwrap();
            sent += 1;
            for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                received.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            }
            let (p, c) = (sessions(producer.client()), sessions(consumer.client()));
            // Once every connection is open (the consumer has records), no new one may open:
            // a broker that ended a session would have closed its connection.
            if !received.is_empty() && opened.is_none() {
                opened = Some((p.1, c.1));
            }
            if let Some((po, co)) = opened {
                assert_eq!((p.1, c.1), (po, co), "connections were reopened (sessions ended?)");
            }
            // Every connection of both clients re-authenticated at least 3 times.
            if p.0 >= 3 * p.1 && c.0 >= 3 * c.1 {
                eprintln!("re-authentications, connections: producer {p:?}, consumer {c:?}; {sent} records");
                break;
            }
        }
        while received.len() < sent as usize {
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                received.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            }
        }
        let errors: u64 = [producer.client(), consumer.client()]
            .iter()
            .flat_map(|c| c.metrics().brokers)
            .map(|b| b.request_errors)
            .sum();
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
        (sent, received, errors)
    };
    let (sent, received, errors) = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("3 re-authentications of each client did not happen within 120 s");
    let expected: Vec<String> = (0..sent).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
    assert_eq!(errors, 0, "requests failed");
}
