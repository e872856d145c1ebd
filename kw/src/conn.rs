//! Connection settings: `-b/--bootstrap`, `-X key=value` and `-F/--config FILE` (a Java
//! `.properties` file), turned into the configuration of a producer, a consumer or an admin
//! client.
//!
//! They can be given before the command (`kw -b host:9092 topics list`) or after it
//! (`kw topics list -b host:9092`). Later settings win: the properties file, then `-X`, then
//! `-b`; `KAFKA_BOOTSTRAP` is used only if none of them names the bootstrap servers, and
//! `127.0.0.1:9092` if nothing does.
//!
//! Each command takes the properties of the client it uses: `produce` the producer's, `consume`
//! the consumer's, admin commands those every client has ([`ADMIN_PROPERTIES`]). Anything else
//! is refused naming the property and whose it is. `security.protocol` and the `ssl.*` /
//! `sasl.*` properties the client supports (TLS, SASL PLAIN and SCRAM) are taken by every
//! command, so a Java `client.properties` for a secured cluster works as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use kafka_wire::client::{Admin, ClientConfig, ConnectionConfig, ConsumerConfig, Error as KafkaError, ProducerConfig};

use crate::error::{runtime, usage, Failure, Result};

pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The `client.id` of kw's clients unless `-X client.id=...` says otherwise.
const CLIENT_ID: &str = "kw";
/// `kw consume`'s `max.poll.records` unless set: it prints whatever a poll returns, so a poll
/// of 500 records (Java's default, for a loop that processes each) only adds turns of its loop.
const MAX_POLL_RECORDS: usize = 5000;

/// The connection options of a command.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Bootstrap broker(s), comma-separated host:port [default: $KAFKA_BOOTSTRAP, else 127.0.0.1:9092]
    #[arg(short = 'b', long = "bootstrap", value_name = "HOST:PORT,...")]
    pub bootstrap: Option<String>,
    /// Kafka client property, repeatable (e.g. -X linger.ms=20 -X client.id=me)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Java .properties file of client properties
    #[arg(short = 'F', long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

/// The connection options of `topics create`, whose `--config` sets topic configs (as in
/// `kafka-topics.sh`): the properties file is `-F/--command-config` there.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgsCommandConfig {
    /// Bootstrap broker(s), comma-separated host:port [default: $KAFKA_BOOTSTRAP, else 127.0.0.1:9092]
    #[arg(short = 'b', long = "bootstrap", value_name = "HOST:PORT,...")]
    pub bootstrap: Option<String>,
    /// Kafka client property, repeatable (e.g. -X client.id=me)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Java .properties file of client properties
    #[arg(short = 'F', long = "command-config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

impl From<ConnArgsCommandConfig> for ConnArgs {
    fn from(c: ConnArgsCommandConfig) -> Self {
        Self { bootstrap: c.bootstrap, properties: c.properties, config_file: c.config_file }
    }
}

/// One property and where it was given, for error messages.
#[derive(Clone, Debug)]
struct Property {
    key: String,
    value: String,
    origin: String,
}

/// The merged settings of the top level and of the command.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Client properties, in order (later ones win).
    properties: Vec<Property>,
    /// `bootstrap.servers` from `-b`, `$KAFKA_BOOTSTRAP` or the default, when it applies.
    bootstrap: Option<Property>,
}

/// Which client a command uses, to take the properties of that client only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Producer,
    Consumer,
    Admin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Admin => "admin",
        }
    }

    /// The commands that use this client, for messages.
    fn users(self) -> &'static str {
        match self {
            Self::Producer => "kw produce uses a producer",
            Self::Consumer => "kw consume uses a consumer",
            Self::Admin => "admin commands use an admin client",
        }
    }
}

/// The properties of admin commands: those every Kafka client has, and
/// `default.api.timeout.ms` (how long an admin operation may take, retries included).
const ADMIN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "receive.message.max.bytes",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    "metadata.max.age.ms",
    "default.api.timeout.ms",
];

/// The consumer's client raises its request timeout to `fetch.max.wait.ms` plus this (a fetch
/// waits that long at the broker); an explicit `request.timeout.ms` below that is refused.
const FETCH_MARGIN: Duration = Duration::from_secs(5);

impl Settings {
    /// Merges the top-level options (`top`, with `env_bootstrap` from `KAFKA_BOOTSTRAP` when
    /// `-b` was not given there) and the command's own (`cmd`, which win). Bootstrap addresses
    /// and `security.protocol` are checked here, whatever the command.
    pub fn merge(top: &ConnArgs, env_bootstrap: Option<String>, cmd: &ConnArgs) -> Result<Self> {
        let mut properties = Vec::new();
        for args in [top, cmd] {
            if let Some(file) = &args.config_file {
                properties.extend(read_properties_file(file)?);
            }
        }
        for args in [top, cmd] {
            for p in &args.properties {
                let (key, value) = p.split_once('=').ok_or_else(|| usage(format!("-X {p}: expected KEY=VALUE")))?;
                if key.trim().is_empty() {
                    return Err(usage(format!("-X {p}: empty property name")));
                }
                properties.push(Property {
                    key: key.trim().into(),
                    value: value.trim().into(),
                    origin: format!("-X {p}"),
                });
            }
        }
        for p in &properties {
            match p.key.as_str() {
                "security.protocol" => check_security_protocol(p)?,
                "bootstrap.servers" => check_bootstrap(&p.value, &format!("bootstrap.servers (from {})", p.origin))?,
                _ => {}
            }
        }

        let named = properties.iter().any(|p| p.key == "bootstrap.servers");
        let explicit = cmd.bootstrap.clone().or_else(|| top.bootstrap.clone());
        let bootstrap = match (explicit, env_bootstrap.filter(|b| !b.trim().is_empty())) {
            (Some(b), _) => Some((b, "--bootstrap")),
            (None, _) if named => None,
            (None, Some(b)) => Some((b, "$KAFKA_BOOTSTRAP")),
            (None, None) => Some((DEFAULT_BOOTSTRAP.to_owned(), "--bootstrap")),
        };
        let bootstrap = match bootstrap {
            Some((value, origin)) => {
                check_bootstrap(&value, origin)?;
                Some(Property { key: "bootstrap.servers".into(), value, origin: origin.into() })
            }
            None => None,
        };
        Ok(Self { properties, bootstrap })
    }

    /// Every property, the bootstrap servers last (they win).
    fn all(&self) -> impl Iterator<Item = &Property> {
        self.properties.iter().chain(&self.bootstrap)
    }

    /// The producer configuration of `kw produce` (checked): producer properties only.
    pub fn producer(&self, extra: &[(&str, String)]) -> Result<ProducerConfig> {
        let mut config = ProducerConfig::default().client_id(CLIENT_ID);
        for p in self.all() {
            take(Kind::Producer, p, config.set(&p.key, &p.value))?;
        }
        for (k, v) in extra {
            config.set(k, v)?;
        }
        Ok(config.validated()?)
    }

    /// The consumer configuration of `kw consume` (checked): consumer properties only, and an
    /// explicit `request.timeout.ms` must leave room for `fetch.max.wait.ms`.
    pub fn consumer(&self, extra: &[(&str, String)]) -> Result<ConsumerConfig> {
        let mut config = ConsumerConfig {
            client_id: Some(CLIENT_ID.into()),
            max_poll_records: MAX_POLL_RECORDS,
            ..ConsumerConfig::default()
        };
        for p in self.all() {
            take(Kind::Consumer, p, config.set(&p.key, &p.value))?;
        }
        for (k, v) in extra {
            config.set(k, v)?;
        }
        let config = config.validated()?;
        if let Some(p) = self.properties.iter().rev().find(|p| p.key == "request.timeout.ms") {
            let minimum = config.fetch_max_wait + FETCH_MARGIN;
            if config.request_timeout < minimum {
                return Err(usage(format!(
                    "invalid configuration request.timeout.ms (consumer): {} ms is too short: a fetch waits up to \
                     fetch.max.wait.ms = {} ms at the broker, so it must be at least {} ms (from {})",
                    config.request_timeout.as_millis(),
                    config.fetch_max_wait.as_millis(),
                    minimum.as_millis(),
                    p.origin
                )));
            }
        }
        Ok(config)
    }

    /// The client configuration of admin commands, and their operation timeout if
    /// `default.api.timeout.ms` is given: the properties every client has, taken as given.
    pub fn client(&self) -> Result<(ClientConfig, Option<Duration>)> {
        // The consumer's parser checks the values; its fields are copied as they are.
        let mut values = ConsumerConfig { client_id: Some(CLIENT_ID.into()), ..ConsumerConfig::default() };
        let mut api_timeout = None;
        for p in self.all() {
            if ADMIN_PROPERTIES.contains(&p.key.as_str()) || is_security(&p.key) {
                take(Kind::Admin, p, values.set(&p.key, &p.value))?;
                if p.key == "default.api.timeout.ms" {
                    api_timeout = Some(values.default_api_timeout);
                }
            } else {
                take(
                    Kind::Admin,
                    p,
                    Err(KafkaError::Config { property: p.key.clone(), reason: "unknown property".into() }),
                )?;
            }
        }
        let values = values.validated()?;
        let defaults = ConnectionConfig::default();
        let config = ClientConfig {
            bootstrap_servers: values.bootstrap_servers,
            connection: ConnectionConfig {
                client_id: values.client_id,
                connect_timeout: values.socket_connection_setup_timeout,
                request_timeout: values.request_timeout,
                max_frame_size: values.receive_message_max_bytes,
                retry_backoff: values.retry_backoff,
                retry_backoff_max: values.retry_backoff_max,
                security: values.security,
                ..defaults
            },
        };
        Ok((config, api_timeout))
    }

    /// An admin client, connected.
    pub async fn admin(&self) -> Result<Admin> {
        let (config, timeout) = self.client()?;
        let admin = Admin::connect(config).await.map_err(connect_error)?;
        Ok(match timeout {
            Some(t) => admin.with_timeout(t),
            None => admin,
        })
    }
}

/// The outcome of setting `p` on the client of `kind`: a property this client does not take is
/// refused with what it is (another client's property, TLS/SASL, unknown).
fn take(kind: Kind, p: &Property, result: Result<(), KafkaError>) -> Result<()> {
    let reason = match result {
        Ok(()) => return Ok(()),
        Err(KafkaError::Config { reason, .. }) => reason,
        Err(e) => return Err(e.into()),
    };
    let foreign = reason == "unknown property" || reason.contains("does not support");
    let reason = if !foreign || is_security(&p.key) {
        reason
    } else {
        let mut producer = ProducerConfig::default();
        let mut consumer = ConsumerConfig::default();
        let owners: Vec<&str> = [
            (Kind::Producer, known(producer.set(&p.key, &p.value))),
            (Kind::Consumer, known(consumer.set(&p.key, &p.value))),
        ]
        .into_iter()
        .filter(|(k, takes)| *k != kind && *takes)
        .map(|(k, _)| k.name())
        .collect();
        match owners.as_slice() {
            [] => reason,
            owners => format!("a {} property; {}, which does not take it", owners.join(" and "), kind.users()),
        }
    };
    Err(usage(format!("invalid configuration {} ({}): {reason} (from {})", p.key, kind.name(), p.origin)))
}

/// Whether a client knows a property (even if the value is wrong for it).
fn known(result: Result<(), KafkaError>) -> bool {
    match result {
        Err(KafkaError::Config { reason, .. }) => reason != "unknown property" && !reason.contains("does not support"),
        _ => true,
    }
}

/// The properties of TLS and SASL, which every client takes.
fn is_security(key: &str) -> bool {
    key == "security.protocol" || key.starts_with("ssl.") || key.starts_with("sasl.")
}

/// `security.protocol`: one of Kafka's four, in any case.
fn check_security_protocol(p: &Property) -> Result<()> {
    match p.value.to_ascii_uppercase().as_str() {
        "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => Ok(()),
        _ => Err(usage(format!(
            "invalid configuration security.protocol: {:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL \
             (from {})",
            p.value, p.origin
        ))),
    }
}

/// Every address of a comma-separated bootstrap list must be `host:port` (`[v6]:port`), as
/// Java requires; `origin` names where the list came from.
fn check_bootstrap(list: &str, origin: &str) -> Result<()> {
    let addresses: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if addresses.is_empty() {
        return Err(usage(format!("{origin}: no address given")));
    }
    for address in addresses {
        let problem = match address.rsplit_once(':') {
            None => Some("no port"),
            Some(("", _)) => Some("no host"),
            Some((host, _)) if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) => {
                Some("an IPv6 address must be in brackets")
            }
            Some((_, port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 => None,
                _ => Some("the port is not a number from 1 to 65535"),
            },
        };
        if let Some(problem) = problem {
            return Err(usage(format!(
                "{origin}: {address}: {problem} (expected HOST:PORT, for example localhost:9092)"
            )));
        }
    }
    Ok(())
}

/// A failure to reach the cluster at startup.
pub fn connect_error(e: KafkaError) -> Failure {
    match e {
        KafkaError::Config { .. } | KafkaError::Misuse { .. } => e.into(),
        e => runtime(format!("cannot connect to Kafka: {}", crate::error::describe(&e))),
    }
}

/// The `(key, value)` pairs of a Java `.properties` file: `key=value`, `key: value` or
/// `key value`; `#` and `!` start comments; a trailing backslash continues a line.
fn read_properties_file(path: &Path) -> Result<Vec<Property>> {
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--config {}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if logical.is_empty() {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            start = i + 1;
        }
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        let end = entry.find(|c: char| c == '=' || c == ':' || c.is_whitespace()).unwrap_or(entry.len());
        let (key, rest) = entry.split_at(end);
        let rest = rest.trim_start();
        let value = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim();
        out.push(Property {
            key: key.to_owned(),
            value: value.to_owned(),
            origin: format!("{}:{start}", path.display()),
        });
    }
    if !logical.is_empty() {
        return Err(usage(format!("--config {}: the last line ends with a continuation backslash", path.display())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer_config(properties: &[&str]) -> ConsumerConfig {
        let cmd = ConnArgs { properties: properties.iter().map(|p| p.to_string()).collect(), ..ConnArgs::default() };
        Settings::merge(&ConnArgs::default(), None, &cmd).unwrap().consumer(&[]).unwrap()
    }

    #[test]
    fn consume_polls_up_to_its_own_default_unless_max_poll_records_is_set() {
        assert_eq!(consumer_config(&[]).max_poll_records, MAX_POLL_RECORDS);
        assert_eq!(consumer_config(&["max.poll.records=7"]).max_poll_records, 7);
    }
}
