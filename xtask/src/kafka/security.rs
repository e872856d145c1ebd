//! `cargo xtask kafka up --security`: secured listeners on the 1-node cluster, next to its
//! plaintext one (which the rest of the suite keeps using), for the client's TLS and SASL tests.
//!
//! | port | listener        | protocol       | what it asks of a client                        |
//! |------|-----------------|----------------|-------------------------------------------------|
//! | 9192 | SASL_PLAINTEXT  | SASL_PLAINTEXT | PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512            |
//! | 9193 | SSL             | SSL            | trust in the test CA                            |
//! | 9194 | SASL_SSL        | SASL_SSL       | trust in the test CA, then PLAIN or SCRAM        |
//! | 9195 | MTLS            | SSL            | trust in the test CA and a certificate it signed |
//! | 9196 | OAUTH           | SASL_SSL       | trust in the test CA, then OAUTHBEARER           |
//! | 9197 | REAUTH          | SASL_PLAINTEXT | SCRAM-SHA-256 or OAUTHBEARER; re-authentication  |
//! |      |                 |                | every 4 s (`connections.max.reauth.ms`, KIP-368) |
//!
//! OAUTHBEARER takes unsecured JWS tokens (`"alg":"none"`): with no callback handler set, the
//! broker validates with Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler`, for tests only.
//!
//! Everything is made fresh at each fresh `up`, in `.kafka/cluster1/security/`: a CA, the
//! broker's key and certificate (for `localhost` and `127.0.0.1`, in a PKCS12 keystore, which
//! Java reads), a client certificate and its key in PEM for mutual TLS, and a second CA that
//! signed nothing the broker uses (for the untrusted-certificate test). Java's `keytool` makes
//! the keys and certificates; `openssl` only converts the client's key to PEM, which `keytool`
//! cannot write. The SCRAM user is written at storage format (`--add-scram`), the KRaft way;
//! the PLAIN user is in the listener's JAAS configuration.
//!
//! `.kafka/security` tells the test harness the ports, files and credentials, one `key=value`
//! a line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The user every mechanism knows, and its password (test credentials, not secrets).
pub const USER: &str = "alice";
/// `USER`'s password.
pub const PASSWORD: &str = "alice-secret";
/// The password of the generated keystores.
const STORE_PASSWORD: &str = "kafka-wire-test";

/// The secured listeners: (name, protocol, port).
pub const LISTENERS: &[(&str, &str, u16)] = &[
    ("SASL_PLAINTEXT", "SASL_PLAINTEXT", 9192),
    ("SSL", "SSL", 9193),
    ("SASL_SSL", "SASL_SSL", 9194),
    ("MTLS", "SSL", 9195),
    ("OAUTH", "SASL_SSL", 9196),
    ("REAUTH", "SASL_PLAINTEXT", 9197),
];

/// The session lifetime of the REAUTH listener: short, so that a test sees several
/// re-authentications.
pub const REAUTH_MS: u64 = 4000;

/// The generated files.
pub struct Material {
    dir: PathBuf,
}

impl Material {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The directory of the generated files.
pub fn dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("security")
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn keytool(dir: &Path, args: &[&str]) -> Result<()> {
    let keytool = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/keytool"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("keytool"));
    run(&format!("keytool {}", args.first().unwrap_or(&"")), Command::new(keytool).current_dir(dir).args(args))
}

/// A key pair in PKCS12 keystore `store` under `alias`, for `dname`.
fn keypair(dir: &Path, store: &str, alias: &str, dname: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec![
        "-genkeypair",
        "-alias",
        alias,
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-dname",
        dname,
        "-validity",
        "3650",
        "-storetype",
        "PKCS12",
        "-keystore",
        store,
        "-storepass",
        STORE_PASSWORD,
    ];
    args.extend_from_slice(extra);
    keytool(dir, &args)
}

/// Exports the certificate of `alias` in `store` to `pem`.
fn export(dir: &Path, store: &str, alias: &str, pem: &str) -> Result<()> {
    keytool(
        dir,
        &["-exportcert", "-rfc", "-alias", alias, "-keystore", store, "-storepass", STORE_PASSWORD, "-file", pem],
    )
}

/// Has the CA in `ca.p12` sign the key of `alias` in `store` with the extensions `ext`, and puts
/// the chain back into `store`; the leaf certificate is also written to `pem`.
fn sign(dir: &Path, store: &str, alias: &str, pem: &str, ext: &[&str]) -> Result<()> {
    let csr = format!("{alias}.csr");
    keytool(dir, &["-certreq", "-alias", alias, "-keystore", store, "-storepass", STORE_PASSWORD, "-file", &csr])?;
    let mut args = vec![
        "-gencert",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-storepass",
        STORE_PASSWORD,
        "-infile",
        &csr,
        "-outfile",
        pem,
        "-rfc",
        "-validity",
        "3650",
    ];
    for e in ext {
        args.extend_from_slice(&["-ext", e]);
    }
    keytool(dir, &args)?;
    keytool(
        dir,
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "ca.pem",
            "-keystore",
            store,
            "-storepass",
            STORE_PASSWORD,
        ],
    )?;
    keytool(dir, &["-importcert", "-alias", alias, "-file", pem, "-keystore", store, "-storepass", STORE_PASSWORD])
}

/// Fails early, saying what to install, when a tool the certificates need is missing.
fn require(tool: &str, package: &str) -> Result<()> {
    match Command::new(tool).arg(if tool == "openssl" { "version" } else { "-help" }).output() {
        Ok(_) => Ok(()),
        Err(e) => {
            bail!("`{tool}` is needed for --security and cannot be run ({e}): install it (apt-get install {package})")
        }
    }
}

/// Makes the CA, the broker's keystore and truststore, the client's PEM certificate and key,
/// and another CA, in `dir` (emptied first).
pub fn generate(dir: &Path) -> Result<Material> {
    require("openssl", "openssl")?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    keypair(dir, "ca.p12", "ca", "CN=kafka-wire test CA", &["-ext", "bc:c", "-ext", "KU=keyCertSign,cRLSign"])?;
    export(dir, "ca.p12", "ca", "ca.pem")?;
    keypair(dir, "other-ca.p12", "ca", "CN=kafka-wire other CA", &["-ext", "bc:c"])?;
    export(dir, "other-ca.p12", "ca", "other-ca.pem")?;

    keypair(dir, "broker.p12", "broker", "CN=localhost", &[])?;
    sign(
        dir,
        "broker.p12",
        "broker",
        "broker.pem",
        &["SAN=dns:localhost,ip:127.0.0.1", "KU=digitalSignature", "EKU=serverAuth,clientAuth"],
    )?;
    keytool(
        dir,
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "ca.pem",
            "-storetype",
            "PKCS12",
            "-keystore",
            "truststore.p12",
            "-storepass",
            STORE_PASSWORD,
        ],
    )?;

    keypair(dir, "client.p12", "client", "CN=kafka-wire test client", &[])?;
    sign(dir, "client.p12", "client", "client.pem", &["KU=digitalSignature", "EKU=clientAuth"])?;
    // keytool cannot write a private key; openssl converts it from the PKCS12 store to PKCS#8 PEM.
    let pass = format!("pass:{STORE_PASSWORD}");
    run(
        "openssl pkcs12",
        Command::new("openssl").current_dir(dir).args([
            "pkcs12",
            "-in",
            "client.p12",
            "-nocerts",
            "-nodes",
            "-passin",
            &pass,
            "-out",
            "client-bags.pem",
        ]),
    )?;
    run(
        "openssl pkey",
        Command::new("openssl").current_dir(dir).args(["pkey", "-in", "client-bags.pem", "-out", "client.key"]),
    )?;
    fs::remove_file(dir.join("client-bags.pem"))?;
    Ok(Material { dir: dir.to_owned() })
}

/// `server.properties` with the secured listeners added to the plaintext one of `plain`.
pub fn server_properties(plain: &str, material: &Material) -> String {
    let extra_listeners: String = LISTENERS
        .iter()
        .map(|(name, _, port)| format!(",{name}://127.0.0.1:{}", port + super::cluster::port_offset()))
        .collect();
    let extra_map: String = LISTENERS.iter().map(|(name, protocol, _)| format!(",{name}:{protocol}")).collect();
    let mut out = String::new();
    for line in plain.lines() {
        out.push_str(line);
        if line.starts_with("listeners=") || line.starts_with("advertised.listeners=") {
            // The controller listener is only in `listeners`; each secured one goes in both.
            out.push_str(&extra_listeners);
        } else if line.starts_with("listener.security.protocol.map=") {
            out.push_str(&extra_map);
        }
        out.push('\n');
    }
    let keystore = material.path("broker.p12");
    let truststore = material.path("truststore.p12");
    let plain_jaas =
        format!("org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{PASSWORD}\";");
    let scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    out.push_str(&format!(
        "\
# Secured listeners (`cargo xtask kafka up --security`, xtask/src/kafka/security.rs).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={STORE_PASSWORD}
ssl.key.password={STORE_PASSWORD}
ssl.truststore.type=PKCS12
ssl.truststore.location={truststore}
ssl.truststore.password={STORE_PASSWORD}
listener.name.mtls.ssl.client.auth=required
",
        keystore = keystore.display(),
        truststore = truststore.display(),
    ));
    for listener in ["sasl_plaintext", "sasl_ssl"] {
        out.push_str(&format!("listener.name.{listener}.plain.sasl.jaas.config={plain_jaas}\n"));
        for scram in ["scram-sha-256", "scram-sha-512"] {
            out.push_str(&format!("listener.name.{listener}.{scram}.sasl.jaas.config={scram_jaas}\n"));
        }
    }
    // The broker's own login module for OAUTHBEARER (its token is used only if a listener with
    // it carried inter-broker traffic; none does, but the broker asks for the entry).
    let oauth_jaas = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
                      unsecuredLoginStringClaim_sub=\"broker\";";
    out.push_str(&format!(
        "\
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config={oauth_jaas}
listener.name.reauth.sasl.enabled.mechanisms=SCRAM-SHA-256,OAUTHBEARER
listener.name.reauth.scram-sha-256.sasl.jaas.config={scram_jaas}
listener.name.reauth.oauthbearer.sasl.jaas.config={oauth_jaas}
listener.name.reauth.connections.max.reauth.ms={REAUTH_MS}
"
    ));
    out
}

/// The arguments of `kafka-storage format` that create the SCRAM credentials.
pub fn format_args() -> Vec<String> {
    ["SCRAM-SHA-256", "SCRAM-SHA-512"]
        .iter()
        .flat_map(|m| ["--add-scram".to_owned(), format!("{m}=[name={USER},password={PASSWORD}]")])
        .collect()
}

/// The harness's `.kafka/security`: where each listener is, the PEM files and the credentials.
pub fn harness_file(material: &Material) -> String {
    let mut out = String::from("# Written by `cargo xtask kafka up --security` (xtask/src/kafka/security.rs).\n");
    for (name, _, port) in LISTENERS {
        out.push_str(&format!("{}=127.0.0.1:{}\n", name.to_ascii_lowercase(), port + super::cluster::port_offset()));
    }
    for (key, file) in
        [("ca", "ca.pem"), ("other_ca", "other-ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key")]
    {
        out.push_str(&format!("{key}={}\n", material.path(file).display()));
    }
    out.push_str(&format!("username={USER}\npassword={PASSWORD}\n"));
    out
}
