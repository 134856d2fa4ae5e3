//! How a connection to a cluster is secured: TLS (server verification,
//! optional client certificate) and SASL (PLAIN, SCRAM-SHA-256/512,
//! OAUTHBEARER), read from Kafka's own property names.
//!
//! Secrets are given by reference only: a property names a file (or an
//! environment variable) on the machine that runs the service, read each
//! time a connection opens, so a changed file is used by the next
//! connection without a restart and no secret is ever stored with a link.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError};

use crate::scram::{ScramError, ScramHash};

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn parse(v: &str) -> Option<SecurityProtocol> {
        match v.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Where a secret is: its value is read when a connection opens, never
/// kept in a link.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for Secret {
    // A reference is no secret, but say plainly that it is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(p) => write!(f, "Secret::File({})", p.display()),
            Secret::Env(v) => write!(f, "Secret::Env({v})"),
        }
    }
}

impl Secret {
    /// The secret's value; one trailing newline (as `echo` writes) is not
    /// part of it.
    pub fn read(&self) -> Result<String, SecretError> {
        let mut value = match self {
            Secret::File(path) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            Secret::Env(var) => std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
        };
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        Ok(value)
    }

    pub fn describe(&self) -> String {
        match self {
            Secret::File(p) => format!("file {}", p.display()),
            Secret::Env(v) => format!("environment variable {v}"),
        }
    }
}

/// A secret that cannot be read; says where it was looked for, never what
/// it holds.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {}: {source}", .path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the environment variable {0} that should hold a secret is not set (or not UTF-8)")]
    Env(String),
}

/// Why a connection's security failed: which file, which check, which
/// mechanism, and what to change. Never holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Config(#[from] SecurityConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{} does not hold {what}{}", .path.display(), pem_cause(.source))]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: Option<Arc<rustls::pki_types::pem::Error>>,
    },
    #[error("the certificate or key in {} cannot be used: {}", .0.display(), .1)]
    Certificate(PathBuf, rustls::Error),
    #[error(
        "no CA certificates found on this machine; give ssl.truststore.location (a PEM file \
         of the CAs that sign the brokers' certificates)"
    )]
    NoSystemRoots,
    #[error("cannot verify certificates: {0}")]
    Verifier(rustls::client::VerifierBuilderError),
    #[error("TLS: {0}")]
    Rustls(rustls::Error),
    #[error("{0:?} is not a host name or IP address a certificate can name")]
    BadHostName(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(Arc<std::io::Error>),
    #[error(
        "unknown CA: the broker's certificate is not signed by a CA in ssl.truststore.location \
         (or in the system's bundle when it is not set)"
    )]
    UnknownCa,
    #[error(
        "expired certificate: the broker's certificate (or one of its chain) is expired or not \
         valid yet"
    )]
    Expired,
    #[error(
        "host name mismatch: the broker's certificate does not name {0}; connect by a name it \
         lists (or set ssl.endpoint.identification.algorithm to empty)"
    )]
    HostNameMismatch(String),
    #[error("the broker's certificate is refused: {0:?}")]
    BrokerCertificate(CertificateError),
    #[error("the broker ended TLS with alert {:?}{}", .0, alert_hint(*.0))]
    Alert(AlertDescription),
    #[error(
        "the broker does not enable SASL mechanism {mechanism} on this listener (it enables: \
         {enabled}); set sasl.mechanism to one of those"
    )]
    MechanismNotEnabled {
        mechanism: &'static str,
        enabled: String,
    },
    #[error(
        "SASL {mechanism} authentication failed: {message} (check sasl.username and the \
         secret it reads)"
    )]
    AuthenticationFailed {
        mechanism: &'static str,
        message: String,
    },
    #[error("SASL {mechanism}: {source}")]
    Scram {
        mechanism: &'static str,
        source: ScramError,
    },
}

impl SecurityError {
    /// Only a handshake cut short (a reset, a broker restarting) is worth
    /// trying again as it is; everything else needs a change first.
    pub fn is_retriable(&self) -> bool {
        matches!(self, SecurityError::Handshake(_))
    }
}

fn pem_cause(source: &Option<Arc<rustls::pki_types::pem::Error>>) -> String {
    match source {
        Some(e) => format!(" ({e})"),
        None => " (no PEM section of that kind in it)".to_owned(),
    }
}

fn alert_hint(alert: AlertDescription) -> &'static str {
    match alert {
        AlertDescription::BadCertificate
        | AlertDescription::CertificateRequired
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateExpired
        | AlertDescription::AccessDenied => {
            ": the broker refused our client certificate, or wants one (ssl.keystore.location, \
             signed by a CA the broker trusts)"
        }
        _ => ": see the broker's log",
    }
}

/// TLS settings (`security.protocol` SSL or SASL_SSL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificates that sign the brokers' certificates
    /// (`ssl.truststore.location`); `None`: the system's CA bundle.
    pub ca: Option<PathBuf>,
    /// The client certificate chain and its private key, PEM, for brokers
    /// that require one (`ssl.client.auth=required`).
    pub client: Option<ClientCertificate>,
    /// Whether the broker's certificate must name the host connected to
    /// (`ssl.endpoint.identification.algorithm`: `https`, the default, or
    /// empty to turn it off).
    pub verify_hostname: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub certificate: PathBuf,
    /// The same file as `certificate` for a Kafka PEM keystore (key and
    /// chain in one file).
    pub key: PathBuf,
}

/// SASL settings (`security.protocol` SASL_PLAINTEXT or SASL_SSL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslSettings {
    Plain {
        username: String,
        password: Secret,
    },
    Scram {
        hash: ScramHash,
        username: String,
        password: Secret,
    },
    /// A token obtained elsewhere (and refreshed there) in a file.
    OAuthBearer {
        token: Secret,
    },
}

impl SaslSettings {
    pub fn mechanism(&self) -> &'static str {
        match self {
            SaslSettings::Plain { .. } => "PLAIN",
            SaslSettings::Scram { hash, .. } => hash.mechanism(),
            SaslSettings::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }
}

/// Everything about securing a cluster's connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    pub protocol: SecurityProtocol,
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslSettings>,
}

/// A link property that cannot be used; says which and what to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityConfigError {
    #[error("unsupported property {0:?} (supported: {list})", list = PROPERTIES.join(", "))]
    Unknown(String),
    #[error(
        "property {0:?} would store a secret with the link; give it by reference instead \
         ({1}), a file or environment variable on the machines that run Cutover"
    )]
    InlineSecret(String, &'static str),
    #[error("{property} = {value:?} is not supported: {expected}")]
    Value {
        property: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Missing(String),
    #[error("{0} is only used with security.protocol {1}; set security.protocol or remove it")]
    Unused(String, &'static str),
}

/// The properties a cluster of a link may carry.
pub const PROPERTIES: &[&str] = &[
    "client.id",
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password.file",
    "sasl.password.env",
    "sasl.oauthbearer.token.file",
    "sasl.oauthbearer.token.env",
];

/// Properties that would hold a secret, and what to give instead.
const INLINE_SECRETS: &[(&str, &str)] = &[
    ("sasl.password", "sasl.password.file or sasl.password.env"),
    (
        "sasl.jaas.config",
        "sasl.username with sasl.password.file or sasl.password.env",
    ),
    (
        "ssl.key.password",
        "an unencrypted PEM key in a file only the service can read",
    ),
    (
        "ssl.keystore.password",
        "a PEM keystore (ssl.keystore.type=PEM) in a file only the service can read",
    ),
    (
        "ssl.truststore.password",
        "a PEM truststore (ssl.truststore.type=PEM)",
    ),
    ("ssl.keystore.key", "ssl.keystore.location (a PEM file)"),
    (
        "ssl.keystore.certificate.chain",
        "ssl.keystore.location (a PEM file)",
    ),
    (
        "ssl.truststore.certificates",
        "ssl.truststore.location (a PEM file)",
    ),
    (
        "sasl.oauthbearer.token",
        "sasl.oauthbearer.token.file or sasl.oauthbearer.token.env",
    ),
];

impl Security {
    /// Reads the security properties of a cluster (others, such as
    /// `client.id`, are left to the caller). Checks only what the
    /// properties say; files are read when connecting.
    pub fn from_properties(
        props: &BTreeMap<String, String>,
    ) -> Result<Security, SecurityConfigError> {
        for key in props.keys() {
            if let Some((_, instead)) = INLINE_SECRETS.iter().find(|(k, _)| k == key) {
                return Err(SecurityConfigError::InlineSecret(key.clone(), instead));
            }
            if !PROPERTIES.contains(&key.as_str()) {
                return Err(SecurityConfigError::Unknown(key.clone()));
            }
        }
        let get = |k: &str| props.get(k).map(String::as_str);
        let protocol = match get("security.protocol") {
            None => SecurityProtocol::Plaintext,
            Some(v) => SecurityProtocol::parse(v).ok_or_else(|| SecurityConfigError::Value {
                property: "security.protocol",
                value: v.to_owned(),
                expected: "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            })?,
        };
        let tls = if protocol.tls() {
            Some(tls_settings(props)?)
        } else {
            if let Some(k) = props.keys().find(|k| k.starts_with("ssl.")) {
                return Err(SecurityConfigError::Unused(k.clone(), "SSL or SASL_SSL"));
            }
            None
        };
        let sasl = if protocol.sasl() {
            Some(sasl_settings(props)?)
        } else {
            if let Some(k) = props.keys().find(|k| k.starts_with("sasl.")) {
                return Err(SecurityConfigError::Unused(
                    k.clone(),
                    "SASL_PLAINTEXT or SASL_SSL",
                ));
            }
            None
        };
        Ok(Security {
            protocol,
            tls,
            sasl,
        })
    }
}

fn pem_only(
    props: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<(), SecurityConfigError> {
    match props.get(key) {
        Some(v) if !v.eq_ignore_ascii_case("PEM") => Err(SecurityConfigError::Value {
            property: key,
            value: v.clone(),
            expected: "PEM (convert a JKS or PKCS12 store with keytool and openssl)",
        }),
        _ => Ok(()),
    }
}

fn tls_settings(props: &BTreeMap<String, String>) -> Result<TlsSettings, SecurityConfigError> {
    pem_only(props, "ssl.truststore.type")?;
    pem_only(props, "ssl.keystore.type")?;
    let path = |k: &str| props.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let keystore = path("ssl.keystore.location");
    let cert = path("ssl.certificate.location");
    let key = path("ssl.key.location");
    let client = match (keystore, cert, key) {
        (None, None, None) => None,
        (Some(store), None, None) => Some(ClientCertificate {
            certificate: store.clone(),
            key: store,
        }),
        (None, Some(certificate), Some(key)) => Some(ClientCertificate { certificate, key }),
        (Some(_), _, _) => {
            return Err(SecurityConfigError::Missing(
                "give either ssl.keystore.location (key and chain in one PEM file) or \
                 ssl.certificate.location with ssl.key.location, not both"
                    .into(),
            ))
        }
        (None, _, _) => {
            return Err(SecurityConfigError::Missing(
                "ssl.certificate.location and ssl.key.location go together (the client \
                 certificate chain and its private key, PEM)"
                    .into(),
            ))
        }
    };
    let verify_hostname = match props
        .get("ssl.endpoint.identification.algorithm")
        .map(String::as_str)
    {
        None => true,
        Some(v) if v.eq_ignore_ascii_case("https") => true,
        Some("") => false,
        Some(v) => {
            return Err(SecurityConfigError::Value {
                property: "ssl.endpoint.identification.algorithm",
                value: v.to_owned(),
                expected: "https (check the broker's host name, the default) or empty (do not)",
            })
        }
    };
    Ok(TlsSettings {
        ca: path("ssl.truststore.location"),
        client,
        verify_hostname,
    })
}

fn secret(
    props: &BTreeMap<String, String>,
    file: &str,
    env: &str,
) -> Result<Option<Secret>, SecurityConfigError> {
    match (props.get(file), props.get(env)) {
        (Some(_), Some(_)) => Err(SecurityConfigError::Missing(format!(
            "give {file} or {env}, not both"
        ))),
        (Some(p), None) if !p.is_empty() => Ok(Some(Secret::File(PathBuf::from(p)))),
        (None, Some(v)) if !v.is_empty() => Ok(Some(Secret::Env(v.clone()))),
        (None, None) => Ok(None),
        _ => Err(SecurityConfigError::Missing(format!(
            "{file} / {env} must not be empty"
        ))),
    }
}

fn sasl_settings(props: &BTreeMap<String, String>) -> Result<SaslSettings, SecurityConfigError> {
    let mechanism = props.get("sasl.mechanism").map(String::as_str);
    // Kafka's default mechanism.
    let mechanism = mechanism.unwrap_or("GSSAPI");
    let user_and_password = || -> Result<(String, Secret), SecurityConfigError> {
        let username = props
            .get("sasl.username")
            .filter(|u| !u.is_empty())
            .cloned()
            .ok_or_else(|| {
                SecurityConfigError::Missing(format!(
                    "sasl.mechanism {mechanism} needs sasl.username"
                ))
            })?;
        let password =
            secret(props, "sasl.password.file", "sasl.password.env")?.ok_or_else(|| {
                SecurityConfigError::Missing(format!(
                    "sasl.mechanism {mechanism} needs sasl.password.file or sasl.password.env"
                ))
            })?;
        Ok((username, password))
    };
    let oauth = |m: &str| -> Result<(), SecurityConfigError> {
        match props.keys().find(|k| k.starts_with("sasl.oauthbearer.")) {
            Some(k) => Err(SecurityConfigError::Unused(
                format!("{k} (with sasl.mechanism {m})"),
                "SASL_PLAINTEXT or SASL_SSL and sasl.mechanism OAUTHBEARER",
            )),
            None => Ok(()),
        }
    };
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            oauth("PLAIN")?;
            let (username, password) = user_and_password()?;
            Ok(SaslSettings::Plain { username, password })
        }
        m @ ("SCRAM-SHA-256" | "SCRAM-SHA-512") => {
            oauth(m)?;
            let (username, password) = user_and_password()?;
            let hash = if m == "SCRAM-SHA-256" {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            Ok(SaslSettings::Scram {
                hash,
                username,
                password,
            })
        }
        "OAUTHBEARER" => {
            for k in ["sasl.username", "sasl.password.file", "sasl.password.env"] {
                if props.contains_key(k) {
                    return Err(SecurityConfigError::Unused(
                        format!("{k} (with sasl.mechanism OAUTHBEARER)"),
                        "SASL and sasl.mechanism PLAIN or SCRAM",
                    ));
                }
            }
            let token = secret(
                props,
                "sasl.oauthbearer.token.file",
                "sasl.oauthbearer.token.env",
            )?
            .ok_or_else(|| {
                SecurityConfigError::Missing(
                    "sasl.mechanism OAUTHBEARER needs sasl.oauthbearer.token.file or \
                         sasl.oauthbearer.token.env (a token kept fresh by whatever issues it)"
                        .into(),
                )
            })?;
            Ok(SaslSettings::OAuthBearer { token })
        }
        _ => Err(SecurityConfigError::Value {
            property: "sasl.mechanism",
            value: mechanism.to_owned(),
            expected: "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (set it: Kafka's \
                       default, GSSAPI, is not supported)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(kv: &[(&str, &str)]) -> Result<Security, SecurityConfigError> {
        Security::from_properties(&props(kv))
    }

    #[test]
    fn no_properties_is_plaintext() {
        assert_eq!(parse(&[]).unwrap(), Security::default());
        assert_eq!(parse(&[("client.id", "x")]).unwrap(), Security::default());
    }

    #[test]
    fn sasl_ssl_with_scram_and_a_password_file() {
        let s = parse(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "mirror"),
            ("sasl.password.file", "/run/secrets/pw"),
            ("ssl.truststore.location", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            s.tls,
            Some(TlsSettings {
                ca: Some("/etc/ca.pem".into()),
                client: None,
                verify_hostname: true
            })
        );
        assert_eq!(
            s.sasl,
            Some(SaslSettings::Scram {
                hash: ScramHash::Sha512,
                username: "mirror".into(),
                password: Secret::File("/run/secrets/pw".into())
            })
        );
        assert_eq!(s.sasl.unwrap().mechanism(), "SCRAM-SHA-512");
    }

    #[test]
    fn ssl_with_a_client_certificate() {
        let s = parse(&[
            ("security.protocol", "SSL"),
            ("ssl.keystore.location", "/k.pem"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.endpoint.identification.algorithm", ""),
        ])
        .unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(
            tls.client,
            Some(ClientCertificate {
                certificate: "/k.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert!(!tls.verify_hostname);
        assert_eq!(tls.ca, None);
        assert_eq!(s.sasl, None);
        let s = parse(&[
            ("security.protocol", "SSL"),
            ("ssl.certificate.location", "/c.pem"),
            ("ssl.key.location", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(
            s.tls.unwrap().client.unwrap(),
            ClientCertificate {
                certificate: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
    }

    #[test]
    fn inline_secrets_are_refused_with_what_to_give_instead() {
        for key in [
            "sasl.password",
            "sasl.jaas.config",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.token",
        ] {
            let e = parse(&[("security.protocol", "SASL_SSL"), (key, "hunter2")]).unwrap_err();
            assert!(matches!(e, SecurityConfigError::InlineSecret(ref k, _) if k == key));
            let text = e.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("by reference"), "{text}");
        }
    }

    #[test]
    fn wrong_settings_say_what_to_do() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("bootstrap.servers", "x")], "unsupported property"),
            (&[("security.protocol", "TLS")], "SASL_SSL"),
            (&[("security.protocol", "SASL_SSL")], "GSSAPI"),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                ],
                "needs sasl.username",
            ),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                ],
                "sasl.password.file",
            ),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                    ("sasl.password.file", "/a"),
                    ("sasl.password.env", "B"),
                ],
                "not both",
            ),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "OAUTHBEARER"),
                ],
                "sasl.oauthbearer.token.file",
            ),
            (
                &[("sasl.mechanism", "PLAIN")],
                "only used with security.protocol",
            ),
            (
                &[("ssl.truststore.location", "/ca")],
                "only used with security.protocol",
            ),
            (
                &[("security.protocol", "SSL"), ("ssl.truststore.type", "JKS")],
                "PEM",
            ),
            (
                &[("security.protocol", "SSL"), ("ssl.key.location", "/k")],
                "go together",
            ),
            (
                &[
                    ("security.protocol", "SSL"),
                    ("ssl.endpoint.identification.algorithm", "none"),
                ],
                "https",
            ),
        ];
        for (kv, says) in cases {
            let e = parse(kv).unwrap_err().to_string();
            assert!(e.contains(says), "{kv:?}: {e}");
        }
    }

    #[test]
    fn secrets_are_read_when_asked_without_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let s = Secret::File(path.clone());
        assert_eq!(s.read().unwrap(), "s3cret");
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(s.read().unwrap(), "rotated");
        let missing = Secret::File(dir.path().join("none"));
        assert!(missing.read().unwrap_err().to_string().contains("none"));
        let e = Secret::Env("CUTOVER_TEST_NO_SUCH_VARIABLE".into())
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("CUTOVER_TEST_NO_SUCH_VARIABLE"));
    }
}
