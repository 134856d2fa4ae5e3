//! Connections to secured clusters (issue 9): a real Apache Kafka broker
//! with a SASL_SSL listener (SCRAM) and an SSL listener that requires a
//! client certificate, with certificates this test generates, reached by
//! Cutover's Kafka client as the fetcher, orchestrator and router reach a
//! link's clusters (`ClusterConfig::with_properties`, Kafka's property
//! names): what works, and the error each wrong setting gets.
//!
//! Broker: real Apache Kafka (the source line), since TLS and SASL are the
//! broker's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use cutover_integration_tests::*;
use cutover_kafka::security::SecurityError;
use cutover_kafka::{Cluster, ClusterConfig, KafkaError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-pw-7c1d0e";
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bob-pw-93aa41";

/// A CA and the PEM files signed by it.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// Key and certificate for `names`, as one PEM file (Kafka's PEM
    /// keystore: private key, then the chain).
    fn issue(&self, cn: &str, names: &[&str], dir: &Path, file: &str) -> Result<PathBuf> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let path = dir.join(file);
        std::fs::write(
            &path,
            format!("{}{}{}", key.serialize_pem(), cert.pem(), self.cert.pem()),
        )?;
        Ok(path)
    }

    fn write(&self, dir: &Path, file: &str) -> Result<PathBuf> {
        let path = dir.join(file);
        std::fs::write(&path, self.cert.pem())?;
        Ok(path)
    }
}

struct Secured {
    kafka: KafkaCluster,
    dir: tempfile::TempDir,
    ca: PathBuf,
    client_keystore: PathBuf,
    sasl_port: u16,
    mtls_port: u16,
}

fn start() -> Result<Secured> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("cutover test CA")?;
    let ca_file = ca.write(dir.path(), "ca.pem")?;
    let broker = ca.issue(
        "broker",
        &["localhost", "127.0.0.1"],
        dir.path(),
        "broker.pem",
    )?;
    let client_keystore = ca.issue(
        "mirror-client",
        &["mirror-client"],
        dir.path(),
        "client.pem",
    )?;
    let (sasl_port, mtls_port) = (free_port()?, free_port()?);

    let mut options = KafkaOptions::source()?;
    options.extra_listeners = vec![
        ExtraListener {
            name: "SECURE".into(),
            protocol: "SASL_SSL".into(),
            port: sasl_port,
        },
        ExtraListener {
            name: "MTLS".into(),
            protocol: "SSL".into(),
            port: mtls_port,
        },
    ];
    let mut set = |k: &str, v: &str| {
        options.overrides.insert(k.to_owned(), v.to_owned());
    };
    for listener in ["secure", "mtls"] {
        set(
            &format!("listener.name.{listener}.ssl.keystore.type"),
            "PEM",
        );
        set(
            &format!("listener.name.{listener}.ssl.keystore.location"),
            &broker.display().to_string(),
        );
        set(
            &format!("listener.name.{listener}.ssl.truststore.type"),
            "PEM",
        );
        set(
            &format!("listener.name.{listener}.ssl.truststore.location"),
            &ca_file.display().to_string(),
        );
    }
    set("listener.name.mtls.ssl.client.auth", "required");
    set(
        "listener.name.secure.sasl.enabled.mechanisms",
        "SCRAM-SHA-256,SCRAM-SHA-512",
    );
    for m in ["scram-sha-256", "scram-sha-512"] {
        set(
            &format!("listener.name.secure.{m}.sasl.jaas.config"),
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        );
    }
    let log_dir = test_log_dir("security")?;
    let kafka = KafkaCluster::start(Side::Source, options, &dir.path().join("kafka"), &log_dir)?;
    let s = Secured {
        kafka,
        dir,
        ca: ca_file,
        client_keystore,
        sasl_port,
        mtls_port,
    };
    s.set_scram(ALICE, "SCRAM-SHA-256", ALICE_PASSWORD)?;
    s.set_scram(BOB, "SCRAM-SHA-512", BOB_PASSWORD)?;
    Ok(s)
}

impl Secured {
    /// A user's SCRAM credential, set through the PLAINTEXT listener with
    /// Kafka's own tool.
    fn set_scram(&self, user: &str, mechanism: &str, password: &str) -> Result<()> {
        let mut cmd =
            self.kafka
                .dist()
                .java("kafka.admin.ConfigCommand", 256, true, self.dir.path())?;
        cmd.args(["--bootstrap-server", self.kafka.bootstrap()])
            .args(["--alter", "--entity-type", "users", "--entity-name", user])
            .args([
                "--add-config",
                &format!("{mechanism}=[iterations=4096,password={password}]"),
            ]);
        let p = ServiceProcess::spawn_tethered(
            &format!("kafka-configs-{user}"),
            cmd,
            &test_log_dir("security")?,
        )?;
        let status = p.wait_exit(Duration::from_secs(90))?;
        if !status.success() {
            bail!(
                "kafka-configs for {user} failed ({status}):\n{}",
                p.log_tail(20)
            );
        }
        Ok(())
    }

    fn secret(&self, name: &str, value: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        Ok(path)
    }

    fn scram(
        &self,
        host: &str,
        user: &str,
        mechanism: &str,
        password_file: &Path,
    ) -> BTreeMap<String, String> {
        props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", mechanism),
            ("sasl.username", user),
            ("sasl.password.file", &password_file.display().to_string()),
            ("ssl.truststore.location", &self.ca.display().to_string()),
        ])
        .into_iter()
        .chain([("bootstrap".to_owned(), format!("{host}:{}", self.sasl_port))])
        .collect()
    }
}

fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Connects with a link's properties (the "bootstrap" entry is the
/// address, not a property) and asks for metadata.
async fn reach(mut props: BTreeMap<String, String>) -> Result<Vec<String>, KafkaError> {
    let bootstrap = props.remove("bootstrap").unwrap_or_default();
    let mut config = ClusterConfig::with_properties([bootstrap], &props)?;
    config.connect_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(10);
    config.retries = 0;
    let cluster = Cluster::connect(config).await?;
    let meta = cluster.metadata(None).await;
    cluster.close().await;
    let meta = meta?;
    Ok(meta.brokers.iter().map(|b| b.addr()).collect())
}

fn security_error(
    r: Result<Vec<String>, KafkaError>,
) -> Result<(String, std::sync::Arc<SecurityError>)> {
    match r {
        Err(e @ KafkaError::Security { .. }) => {
            let KafkaError::Security { ref source, .. } = e else {
                unreachable!()
            };
            assert!(!e.is_retriable(), "{e}: a setting must change first");
            Ok((e.to_string(), source.clone()))
        }
        Err(e) => bail!("not a security error: {e:?}"),
        Ok(b) => bail!("connected ({b:?}) where it must not"),
    }
}

#[test]
fn secured_listeners_work_with_the_right_settings_and_say_what_is_wrong_otherwise() -> Result<()> {
    let s = start().context("starting the secured broker")?;
    let rt = tokio::runtime::Runtime::new()?;
    let alice_pw = s.secret("alice.pw", ALICE_PASSWORD)?;
    let bob_pw = s.secret("bob.pw", BOB_PASSWORD)?;

    // SCRAM-SHA-256 and SCRAM-SHA-512 over TLS: metadata through the
    // secured listener names its advertised address.
    for (user, mechanism, pw) in [
        (ALICE, "SCRAM-SHA-256", &alice_pw),
        (BOB, "SCRAM-SHA-512", &bob_pw),
    ] {
        let brokers = rt
            .block_on(reach(s.scram("127.0.0.1", user, mechanism, pw)))
            .with_context(|| format!("{user} with {mechanism}"))?;
        assert_eq!(brokers, vec![format!("127.0.0.1:{}", s.sasl_port)]);
    }

    // The wrong password: SASL's refusal, naming the mechanism, never the
    // password.
    let wrong = s.secret("wrong.pw", "not-alices-password")?;
    let (text, e) =
        security_error(rt.block_on(reach(s.scram("127.0.0.1", ALICE, "SCRAM-SHA-256", &wrong))))?;
    assert!(
        matches!(
            *e,
            SecurityError::AuthenticationFailed {
                mechanism: "SCRAM-SHA-256",
                ..
            }
        ),
        "{text}"
    );
    assert!(!text.contains("not-alices-password"), "{text}");

    // A mechanism the listener does not enable.
    let mut plain = s.scram("127.0.0.1", ALICE, "PLAIN", &alice_pw);
    plain.insert("sasl.mechanism".into(), "PLAIN".into());
    let (text, e) = security_error(rt.block_on(reach(plain)))?;
    assert!(
        matches!(*e, SecurityError::MechanismNotEnabled { .. }),
        "{text}"
    );
    assert!(
        text.contains("SCRAM-SHA-256"),
        "names what is enabled: {text}"
    );

    // A changed password file is read by the next connection: the broker
    // gets Alice's new password, the file follows, no restart.
    s.set_scram(ALICE, "SCRAM-SHA-256", "alice-rotated-2")?;
    assert!(rt
        .block_on(reach(s.scram(
            "127.0.0.1",
            ALICE,
            "SCRAM-SHA-256",
            &alice_pw
        )))
        .is_err());
    std::fs::write(&alice_pw, "alice-rotated-2\n")?;
    rt.block_on(reach(s.scram(
        "127.0.0.1",
        ALICE,
        "SCRAM-SHA-256",
        &alice_pw,
    )))
    .context("after the password file changed")?;

    // A password file that is not there: its path, not a connection error.
    let missing = s.dir.path().join("no-such.pw");
    let (text, e) = security_error(rt.block_on(reach(s.scram(
        "127.0.0.1",
        ALICE,
        "SCRAM-SHA-256",
        &missing,
    ))))?;
    assert!(matches!(*e, SecurityError::Secret(_)), "{text}");
    assert!(text.contains("no-such.pw"), "{text}");

    // A CA that did not sign the broker's certificate.
    let other = Ca::new("some other CA")?.write(s.dir.path(), "other-ca.pem")?;
    let mut unknown = s.scram("127.0.0.1", ALICE, "SCRAM-SHA-256", &bob_pw);
    unknown.insert(
        "ssl.truststore.location".into(),
        other.display().to_string(),
    );
    let (text, e) = security_error(rt.block_on(reach(unknown)))?;
    assert!(matches!(*e, SecurityError::UnknownCa), "{text}");

    // An address the certificate does not name (the listener answers on
    // every loopback address): refused, unless the check is turned off.
    let mismatch = s.scram("127.0.0.2", ALICE, "SCRAM-SHA-256", &bob_pw);
    let (text, e) = security_error(rt.block_on(reach(mismatch.clone())))?;
    assert!(
        matches!(*e, SecurityError::HostNameMismatch(ref h) if h == "127.0.0.2"),
        "{text}"
    );
    let mut unchecked = s.scram("127.0.0.2", BOB, "SCRAM-SHA-512", &bob_pw);
    unchecked.insert(
        "ssl.endpoint.identification.algorithm".into(),
        String::new(),
    );
    rt.block_on(reach(unchecked))
        .context("host name check off")?;

    // The SSL listener that requires a client certificate: with one it
    // works, without one the broker's refusal is named as such.
    let mtls = |with_cert: bool| {
        let mut p = props(&[
            ("security.protocol", "SSL"),
            ("ssl.truststore.location", &s.ca.display().to_string()),
        ]);
        if with_cert {
            p.insert(
                "ssl.keystore.location".into(),
                s.client_keystore.display().to_string(),
            );
        }
        p.insert("bootstrap".into(), format!("127.0.0.1:{}", s.mtls_port));
        p
    };
    let brokers = rt.block_on(reach(mtls(true))).context("mTLS")?;
    assert_eq!(brokers, vec![format!("127.0.0.1:{}", s.mtls_port)]);
    let (text, e) = security_error(rt.block_on(reach(mtls(false))))?;
    assert!(matches!(*e, SecurityError::Alert(_)), "{text}");
    assert!(text.contains("client certificate"), "{text}");

    // An expired certificate is not here: the JDK does not offer one in a
    // handshake (the broker ends it with handshake_failure), so
    // `tls::tests` checks that error against a rustls server.

    // And the PLAINTEXT listener is untouched by all of it.
    let brokers = rt.block_on(reach(props(&[("bootstrap", s.kafka.bootstrap())])))?;
    assert_eq!(brokers, vec![s.kafka.bootstrap().to_owned()]);
    Ok(())
}
