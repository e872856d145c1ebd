//! Connection settings: `-b/--bootstrap`, `-X key=value` and `-F/--config FILE` (a Java
//! `.properties` file), turned into the configuration of a producer, a consumer or an admin
//! client.
//!
//! They can be given before the command (`kw -b host:9092 topics list`) or after it
//! (`kw topics list -b host:9092`). Later settings win: the properties file, then `-X`, then
//! `-b`; `KAFKA_BOOTSTRAP` is used only if none of them names the bootstrap servers, and
//! `127.0.0.1:9092` if nothing does.

use std::path::{Path, PathBuf};

use clap::Args;
use kafka_wire::client::{Admin, ClientConfig, ConsumerConfig, Error as KafkaError, ProducerConfig};

use crate::error::{config_error, runtime, usage, Failure, Result};

pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The `client.id` of kw's clients unless `-X client.id=...` says otherwise.
const CLIENT_ID: &str = "kw";

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
    properties: Vec<Property>,
    /// From `-b`, or the default if no property names the servers.
    bootstrap: Option<String>,
}

/// Which client the properties are for, to say so when one is refused.
#[derive(Clone, Copy)]
enum Kind {
    Producer,
    Consumer,
}

impl Settings {
    /// Merges the top-level options (`top`, with `env_bootstrap` from `KAFKA_BOOTSTRAP` when
    /// `-b` was not given there) and the command's own (`cmd`, which win).
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
        let explicit = cmd.bootstrap.clone().or_else(|| top.bootstrap.clone());
        let named = properties.iter().any(|p| p.key == "bootstrap.servers");
        let bootstrap = match explicit {
            Some(b) => Some(b),
            None if named => None,
            None => Some(env_bootstrap.filter(|b| !b.trim().is_empty()).unwrap_or_else(|| DEFAULT_BOOTSTRAP.into())),
        };
        if let Some(b) = &bootstrap {
            if b.split(',').all(|s| s.trim().is_empty()) {
                return Err(usage("--bootstrap: no address given"));
            }
        }
        Ok(Self { properties, bootstrap })
    }

    /// The producer configuration (checked).
    pub fn producer(&self, extra: &[(&str, String)]) -> Result<ProducerConfig> {
        let mut config = ProducerConfig::default().client_id(CLIENT_ID);
        self.apply(Kind::Producer, |k, v| config.set(k, v))?;
        for (k, v) in extra {
            config.set(k, v).map_err(config_error)?;
        }
        config.validated().map_err(config_error)
    }

    /// The consumer configuration (checked).
    pub fn consumer(&self, extra: &[(&str, String)]) -> Result<ConsumerConfig> {
        let mut config = ConsumerConfig { client_id: Some(CLIENT_ID.into()), ..ConsumerConfig::default() };
        self.apply(Kind::Consumer, |k, v| config.set(k, v))?;
        for (k, v) in extra {
            config.set(k, v).map_err(config_error)?;
        }
        config.validated().map_err(config_error)
    }

    /// The client configuration of admin commands: properties of either the consumer or the
    /// producer are accepted (a properties file is often shared), the connection settings are
    /// the consumer's.
    pub fn client(&self) -> Result<ClientConfig> {
        let mut consumer = ConsumerConfig { client_id: Some(CLIENT_ID.into()), ..ConsumerConfig::default() };
        let mut producer = ProducerConfig::default();
        for p in &self.properties {
            match consumer.set(&p.key, &p.value) {
                Ok(()) => {}
                Err(KafkaError::Config { reason, .. })
                    if reason == "unknown property" || reason.contains("does not support") =>
                {
                    producer.set(&p.key, &p.value).map_err(|e| refused(&p.origin, e, None))?;
                }
                Err(e) => return Err(refused(&p.origin, e, None)),
            }
        }
        if let Some(b) = &self.bootstrap {
            consumer.set("bootstrap.servers", b).map_err(|e| refused("--bootstrap", e, None))?;
        }
        Ok(consumer.validated().map_err(config_error)?.client_config())
    }

    /// An admin client, connected.
    pub async fn admin(&self) -> Result<Admin> {
        let config = self.client()?;
        Admin::connect(config).await.map_err(connect_error)
    }

    fn apply(&self, kind: Kind, mut set: impl FnMut(&str, &str) -> Result<(), KafkaError>) -> Result<()> {
        for p in &self.properties {
            set(&p.key, &p.value).map_err(|e| refused(&p.origin, e, Some(kind)))?;
        }
        if let Some(b) = &self.bootstrap {
            set("bootstrap.servers", b).map_err(|e| refused("--bootstrap", e, Some(kind)))?;
        }
        Ok(())
    }
}

fn refused(origin: &str, e: KafkaError, kind: Option<Kind>) -> Failure {
    let client = match kind {
        Some(Kind::Producer) => " (producer)",
        Some(Kind::Consumer) => " (consumer)",
        None => "",
    };
    match e {
        KafkaError::Config { property, reason } => {
            usage(format!("invalid configuration {property}{client}: {reason} (from {origin})"))
        }
        other => config_error(other),
    }
}

/// A failure to reach the cluster at startup.
pub fn connect_error(e: KafkaError) -> Failure {
    match e {
        KafkaError::Config { .. } => config_error(e),
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
