//! TLS with rustls and a pure-Rust crypto provider (graviola): no C compiler is needed to build
//! the client. Trust comes from a PEM file or the system's store; client certificates (mutual
//! TLS) from PEM files. A caller who wants another crypto provider or other settings passes a
//! ready [`rustls::ClientConfig`] in [`TlsConfig::rustls`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::{Error, Result};
use super::transport::BoxStream;

/// The `ssl.*` properties this client supports.
#[derive(Clone)]
pub struct TlsConfig {
    /// PEM file of the certificates to trust (`ssl.ca.location`, or `ssl.truststore.location`
    /// with `ssl.truststore.type=PEM`). `None`: the system's trust store.
    pub ca_location: Option<PathBuf>,
    /// PEM file of the client's certificate chain, for mutual TLS (`ssl.certificate.location`,
    /// or the certificates of `ssl.keystore.location` with `ssl.keystore.type=PEM`).
    pub certificate_location: Option<PathBuf>,
    /// PEM file of the client's private key, unencrypted PKCS#8, PKCS#1 or SEC1
    /// (`ssl.key.location`, or the key of `ssl.keystore.location` with `ssl.keystore.type=PEM`).
    pub key_location: Option<PathBuf>,
    /// Whether the broker's certificate must name the host connected to
    /// (`ssl.endpoint.identification.algorithm`: `https`, the default; empty turns it off).
    pub verify_hostname: bool,
    /// A complete rustls configuration to use instead of the above (another crypto provider,
    /// other trust, other protocol versions).
    pub rustls: Option<Arc<rustls::ClientConfig>>,
    truststore_type: Option<String>,
    keystore_type: Option<String>,
    truststore_location: Option<PathBuf>,
    keystore_location: Option<PathBuf>,
    /// The rustls configuration last built, with what it was built from: shared by the clones
    /// of this configuration (every connection of a client), so that the files are read once
    /// and reconnections can resume TLS sessions from its session cache.
    built: Arc<Mutex<Option<Built>>>,
}

/// A built rustls configuration and what it was built from.
type Built = (Inputs, Arc<rustls::ClientConfig>);

/// What a rustls configuration is built from: the trust, certificate and key files and
/// whether host names are verified.
type Inputs = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, bool);

impl std::fmt::Debug for TlsConfig {
    /// Paths and switches only: a given rustls configuration is not shown (it holds the
    /// client's private key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_location", &self.ca_location)
            .field("truststore_location", &self.truststore_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("keystore_location", &self.keystore_location)
            .field("verify_hostname", &self.verify_hostname)
            .field("rustls", &self.rustls.as_ref().map(|_| "<given>"))
            .finish()
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_location: None,
            certificate_location: None,
            key_location: None,
            verify_hostname: true,
            rustls: None,
            truststore_type: None,
            keystore_type: None,
            truststore_location: None,
            keystore_location: None,
            built: Arc::default(),
        }
    }
}

/// A keystore or truststore type: only PEM is read.
fn store_type(key: &str, value: &str) -> Result<String> {
    let t = value.trim().to_ascii_uppercase();
    if t == "PEM" {
        Ok(t)
    } else {
        Err(Error::config(
            key,
            format!("{value:?} is not supported: this client reads PEM files only (set {key}=PEM, and convert a JKS or PKCS12 store with keytool and openssl)"),
        ))
    }
}

impl TlsConfig {
    /// Sets one `ssl.*` property; an error names a property this client does not support or a
    /// bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let path = || (!value.trim().is_empty()).then(|| PathBuf::from(value.trim()));
        match key {
            "ssl.ca.location" => self.ca_location = path(),
            "ssl.truststore.location" => self.truststore_location = path(),
            "ssl.truststore.type" => self.truststore_type = Some(store_type(key, value)?),
            "ssl.keystore.location" => self.keystore_location = path(),
            "ssl.keystore.type" => self.keystore_type = Some(store_type(key, value)?),
            "ssl.certificate.location" => self.certificate_location = path(),
            "ssl.key.location" => self.key_location = path(),
            "ssl.endpoint.identification.algorithm" => {
                self.verify_hostname = match value.trim() {
                    "" => false,
                    v if v.eq_ignore_ascii_case("https") => true,
                    v => return Err(Error::config(key, format!("{v:?} is not one of https or the empty string"))),
                }
            }
            "ssl.key.password" | "ssl.keystore.password" | "ssl.truststore.password" => {
                return Err(Error::config(
                    key,
                    "password-protected keys and stores are not supported: give an unencrypted PEM key \
                     (ssl.key.location) and PEM certificates",
                ));
            }
            _ => {
                return Err(Error::config(
                    key,
                    "a TLS property this client does not support (it takes ssl.ca.location, ssl.truststore.location \
                     and .type=PEM, ssl.keystore.location and .type=PEM, ssl.certificate.location, ssl.key.location, \
                     ssl.endpoint.identification.algorithm)",
                ))
            }
        }
        Ok(())
    }

    /// Checks how the properties combine, and folds the store locations into the PEM ones.
    pub(super) fn validate(&self) -> Result<()> {
        self.resolved().map(|_| ())
    }

    /// The trust file, certificate file and key file, from whichever properties gave them.
    fn resolved(&self) -> Result<(Option<PathBuf>, Option<PathBuf>, Option<PathBuf>)> {
        let pem_only = |location: &Option<PathBuf>, ty: &Option<String>, key: &str| -> Result<()> {
            if location.is_some() && ty.is_none() {
                return Err(Error::config(
                    key,
                    format!(
                        "the default store type (JKS) is not supported: this client reads PEM files only; set {key}=PEM"
                    ),
                ));
            }
            Ok(())
        };
        pem_only(&self.truststore_location, &self.truststore_type, "ssl.truststore.type")?;
        pem_only(&self.keystore_location, &self.keystore_type, "ssl.keystore.type")?;
        if self.truststore_location.is_some() && self.ca_location.is_some() {
            return Err(Error::config("ssl.truststore.location", "give either it or ssl.ca.location, not both"));
        }
        if self.keystore_location.is_some() && (self.certificate_location.is_some() || self.key_location.is_some()) {
            return Err(Error::config(
                "ssl.keystore.location",
                "give either it or ssl.certificate.location and ssl.key.location, not both",
            ));
        }
        let ca = self.ca_location.clone().or_else(|| self.truststore_location.clone());
        let (cert, key) = match &self.keystore_location {
            // A PEM keystore holds the certificate chain and the key in one file.
            Some(k) => (Some(k.clone()), Some(k.clone())),
            None => (self.certificate_location.clone(), self.key_location.clone()),
        };
        match (&cert, &key) {
            (Some(_), None) => Err(Error::config("ssl.key.location", "a client certificate needs its private key")),
            (None, Some(_)) => Err(Error::config("ssl.certificate.location", "a private key needs its certificate")),
            _ => Ok((ca, cert, key)),
        }
    }

    /// The rustls configuration: [`TlsConfig::rustls`] if given, else one built from the files
    /// with graviola as the crypto provider. Errors name the property whose file is at fault.
    pub(super) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(c) = &self.rustls {
            return Ok(c.clone());
        }
        let (ca, cert, key) = self.resolved()?;
        let inputs = (ca.clone(), cert.clone(), key.clone(), self.verify_hostname);
        // A poisoned lock still holds a whole value (it is replaced, never edited).
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, config)) = built.as_ref() {
            if *from == inputs {
                return Ok(config.clone());
            }
        }
        let config = self.build(ca, cert, key)?;
        *built = Some((inputs, config.clone()));
        Ok(config)
    }

    fn build(
        &self,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Arc<rustls::ClientConfig>> {
        let ca_property = if self.ca_location.is_some() { "ssl.ca.location" } else { "ssl.truststore.location" };
        let mut roots = RootCertStore::empty();
        match &ca {
            Some(path) => {
                for c in read_certificates(ca_property, path)? {
                    roots.add(c).map_err(|e| Error::config(ca_property, format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::config(
                        "ssl.ca.location",
                        "not set, and the system's trust store has no certificate: give the CA's PEM file",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls_graviola::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("ssl.protocol", e.to_string()))?;
        let roots = Arc::new(roots);
        let builder = if self.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::config(ca_property, e.to_string()))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName(inner)))
        };
        let (cert_property, key_property) = if self.keystore_location.is_some() {
            ("ssl.keystore.location", "ssl.keystore.location")
        } else {
            ("ssl.certificate.location", "ssl.key.location")
        };
        let config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert_property, &cert)?;
                let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    Error::config(key_property, format!("{}: no unencrypted PEM private key: {e}", key.display()))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| Error::config(key_property, e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn read_certificates(property: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::config(property, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(property, format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// Verifies the broker's certificate chain but not that it names the host
/// (`ssl.endpoint.identification.algorithm=`).
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Runs the TLS handshake over `stream` for the broker at `addr` (`host:port`; the host is the
/// name the certificate must carry). Not bounded here: the caller bounds it with the connect
/// timeout.
pub(super) async fn handshake(
    config: Arc<rustls::ClientConfig>,
    addr: &str,
    stream: BoxStream,
) -> Result<tokio_rustls::client::TlsStream<BoxStream>> {
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls {
        broker: addr.to_owned(),
        reason: format!("{host:?} is not a valid server name: {e}"),
    })?;
    tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| error(addr, e, true))
}

/// The host of `host:port` (`[v6]:port` too), as a certificate names it.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// A socket error on a TLS connection: a TLS failure (a certificate refused by either side, an
/// alert) becomes [`Error::Tls`] with what rustls says; other errors stay I/O errors. During the
/// handshake, a connection the broker closes is most likely not a TLS listener.
pub(super) fn error(addr: &str, e: io::Error, handshaking: bool) -> Error {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        let hint = match tls {
            // Java's TLS 1.3 answers a missing client certificate with bad_certificate.
            rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::CertificateUnknown,
            ) => {
                " (the broker requires a client certificate it trusts: check ssl.certificate.location and \
                 ssl.key.location)"
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                " (the broker's certificate is not signed by a CA this client trusts: check ssl.ca.location)"
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => " (the broker's certificate does not name this host: check the address, or ssl.endpoint.identification.algorithm)",
            rustls::Error::InvalidMessage(_) => " (is this a TLS listener?)",
            _ => "",
        };
        return Error::Tls { broker: addr.to_owned(), reason: format!("{tls}{hint}") };
    }
    if handshaking && matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) {
        return Error::Tls {
            broker: addr.to_owned(),
            reason: format!(
                "the broker closed the connection during the TLS handshake ({e}): is this a TLS listener \
                 (security.protocol SSL or SASL_SSL)?"
            ),
        };
    }
    Error::io(addr, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(r: Result<()>) -> (String, String) {
        match r {
            Err(Error::Config { property, reason }) => (property, reason),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn only_pem_stores_are_read_and_others_are_refused_naming_pem() {
        let mut c = TlsConfig::default();
        for key in ["ssl.truststore.type", "ssl.keystore.type"] {
            for t in ["JKS", "PKCS12"] {
                let (property, reason) = config_error(c.set(key, t));
                assert_eq!(property, key);
                assert!(reason.contains("PEM"), "{reason}");
            }
            c.set(key, "pem").unwrap();
        }
        let mut c = TlsConfig::default();
        c.set("ssl.truststore.location", "/x/ca.jks").unwrap();
        let (property, reason) = config_error(c.validate());
        assert_eq!(property, "ssl.truststore.type");
        assert!(reason.contains("PEM"), "{reason}");
    }

    #[test]
    fn certificates_need_keys_and_locations_do_not_mix() {
        let mut c = TlsConfig::default();
        c.set("ssl.certificate.location", "/c.pem").unwrap();
        assert_eq!(config_error(c.validate()).0, "ssl.key.location");
        c.set("ssl.key.location", "/k.pem").unwrap();
        c.validate().unwrap();
        c.set("ssl.keystore.type", "PEM").unwrap();
        c.set("ssl.keystore.location", "/ks.pem").unwrap();
        assert_eq!(config_error(c.validate()).0, "ssl.keystore.location");
        let mut c = TlsConfig::default();
        c.set("ssl.ca.location", "/ca.pem").unwrap();
        c.set("ssl.truststore.type", "PEM").unwrap();
        c.set("ssl.truststore.location", "/ts.pem").unwrap();
        assert_eq!(config_error(c.validate()).0, "ssl.truststore.location");
    }

    #[test]
    fn hostname_verification_is_on_by_default_and_empty_turns_it_off() {
        let mut c = TlsConfig::default();
        assert!(c.verify_hostname);
        c.set("ssl.endpoint.identification.algorithm", "").unwrap();
        assert!(!c.verify_hostname);
        c.set("ssl.endpoint.identification.algorithm", "HTTPS").unwrap();
        assert!(c.verify_hostname);
        assert_eq!(
            config_error(c.set("ssl.endpoint.identification.algorithm", "ldap")).0,
            "ssl.endpoint.identification.algorithm"
        );
    }

    #[test]
    fn passwords_and_unknown_ssl_properties_are_refused() {
        let mut c = TlsConfig::default();
        for key in ["ssl.key.password", "ssl.keystore.password", "ssl.truststore.password", "ssl.cipher.suites"] {
            let (property, reason) = config_error(c.set(key, "s3cret-value"));
            assert_eq!(property, key);
            assert!(!reason.contains("s3cret-value"), "{reason}");
        }
    }

    #[test]
    fn a_missing_file_is_named_by_its_property() {
        let mut c = TlsConfig::default();
        c.set("ssl.ca.location", "/nonexistent/ca.pem").unwrap();
        let e = c.client_config().unwrap_err();
        assert!(matches!(&e, Error::Config { property, .. } if property == "ssl.ca.location"), "{e:?}");
    }

    /// A CA certificate (made by `cargo xtask kafka up --security`; public, no key here).
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBcDCCARWgAwIBAgIIejoM4VvK2JIwCgYIKoZIzj0EAwIwHTEbMBkGA1UEAxMS
a2Fma2Etd2lyZSB0ZXN0IENBMB4XDTI2MTIwNTEzMzAxNloXDTM2MTIwMjEzMzAx
NlowHTEbMBkGA1UEAxMSa2Fma2Etd2lyZSB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEGb+gjPbQXwNGQIYF3woVLh3kfLRU618759Gc22X5+b2rz91z
rft2o86Hsclum8ipToW4cV1GfKKfgM275EcZG6M/MD0wHQYDVR0OBBYEFDxxBtXc
h2JDit2T0gzZYorpQna3MAsGA1UdDwQEAwIBBjAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0kAMEYCIQCTJiYlgDcPIreX1dlskiQQcqUNNqYeB1bePNUP0ETk
wQIhAIYzqxWU/1zosWEPtksB8apZTLAjEopgvGlIFIvQO4hu
-----END CERTIFICATE-----
";

    #[test]
    fn the_built_configuration_is_shared_by_clones_until_its_inputs_change() {
        let dir = std::env::temp_dir().join(format!("kafka-wire-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, CA).unwrap();
        let mut c = TlsConfig::default();
        c.set("ssl.ca.location", ca.to_str().unwrap()).unwrap();
        let first = c.client_config().unwrap();
        let clone = c.clone();
        assert!(Arc::ptr_eq(&first, &clone.client_config().unwrap()), "a clone rebuilt the configuration");
        c.verify_hostname = false;
        let other = c.client_config().unwrap();
        assert!(!Arc::ptr_eq(&first, &other), "a changed configuration kept the old rustls one");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn host_names_are_taken_from_addresses() {
        assert_eq!(host_of("localhost:9093"), "localhost");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }
}
