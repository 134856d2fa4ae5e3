//! TLS to a broker on rustls: the CA bundle, the optional client
//! certificate and the host name check of [`TlsSettings`], read from their
//! files at each connection (a replaced certificate or CA file is used by
//! the next connection).

use std::io;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::security::{SecurityError, TlsSettings};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA bundle, read once: it does not change under a running
/// service the way a configured CA file may.
fn system_roots() -> Result<Arc<RootCertStore>, SecurityError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(r) = ROOTS.get() {
        return Ok(r.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        return Err(SecurityError::NoSystemRoots);
    }
    Ok(ROOTS.get_or_init(|| Arc::new(store)).clone())
}

fn roots(settings: &TlsSettings) -> Result<Arc<RootCertStore>, SecurityError> {
    let Some(path) = &settings.ca else {
        return system_roots();
    };
    let pem = |source| SecurityError::Pem {
        path: path.clone(),
        what: "CA certificates (ssl.truststore.location)",
        source,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem(Some(Arc::new(e))))? {
        let cert = cert.map_err(|e| pem(Some(Arc::new(e))))?;
        store
            .add(cert)
            .map_err(|e| SecurityError::Certificate(path.clone(), e))?;
    }
    if store.is_empty() {
        return Err(pem(None));
    }
    Ok(Arc::new(store))
}

/// The rustls configuration for one connection.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, SecurityError> {
    let provider = provider();
    let roots = roots(settings)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(SecurityError::Verifier)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SecurityError::Rustls)?;
    let builder = if settings.verify_hostname {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
    };
    let config = match &settings.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let pem = |what, source| SecurityError::Pem {
                path: client.certificate.clone(),
                what,
                source,
            };
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&client.certificate)
                    .map_err(|e| pem("client certificate chain", Some(Arc::new(e))))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| pem("client certificate chain", Some(Arc::new(e))))?;
            if chain.is_empty() {
                return Err(pem("client certificate chain", None));
            }
            let key =
                PrivateKeyDer::from_pem_file(&client.key).map_err(|e| SecurityError::Pem {
                    path: client.key.clone(),
                    what: "an unencrypted private key (PKCS#8, PKCS#1 or SEC1)",
                    source: Some(Arc::new(e)),
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SecurityError::Certificate(client.key.clone(), e))?
        }
    };
    Ok(Arc::new(config))
}

/// The host part of `host:port` (`[v6]:port` too), as the certificate must
/// name it.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The TLS handshake over an open TCP connection.
pub(crate) async fn connect(
    tcp: TcpStream,
    addr: &str,
    settings: &TlsSettings,
) -> Result<TlsStream<TcpStream>, SecurityError> {
    let config = client_config(settings)?;
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| SecurityError::BadHostName(host.to_owned()))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(e, host))
}

/// What went wrong in a handshake, as an operator can act on it.
pub(crate) fn handshake_error(e: io::Error, host: &str) -> SecurityError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return SecurityError::Handshake(Arc::new(e));
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => SecurityError::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                SecurityError::Expired
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                SecurityError::HostNameMismatch(host.to_owned())
            }
            other => SecurityError::BrokerCertificate(other.clone()),
        },
        rustls::Error::AlertReceived(alert) => SecurityError::Alert(*alert),
        other => SecurityError::Rustls(other.clone()),
    }
}

/// Whether an I/O error on an established TLS connection is the broker
/// refusing it (TLS 1.3 brokers check the client's certificate after the
/// client's side of the handshake is done, and say so in an alert on the
/// first read).
pub(crate) fn refusal(e: &io::Error) -> Option<SecurityError> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(SecurityError::Alert(*alert)),
        _ => None,
    }
}

/// `ssl.endpoint.identification.algorithm=` (empty): the chain is verified
/// against the CA bundle as always, only the name in it is not compared
/// with the host (brokers behind addresses their certificates do not list).
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
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain and its validity.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::ClientCertificate;

    #[test]
    fn host_names_come_out_of_addresses() {
        assert_eq!(host_of("broker-1.kafka:9093"), "broker-1.kafka");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }

    /// A TLS server (rustls, not a broker: the handshake is all there is
    /// to check) presenting a certificate for `names` valid `from`..`to`,
    /// signed by a fresh CA; the CA's PEM file and the server's address.
    async fn server(
        names: &[&str],
        from: (i32, u8, u8),
        to: (i32, u8, u8),
    ) -> (tempfile::TempDir, std::path::PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Its own name: two CAs of one name would be told apart only by
        // their signatures.
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, crate::scram::nonce());
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        leaf.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        (dir, ca_file, addr)
    }

    async fn handshake(
        ca: &std::path::Path,
        addr: &str,
        verify_hostname: bool,
    ) -> Result<(), SecurityError> {
        let settings = TlsSettings {
            ca: Some(ca.to_path_buf()),
            client: None,
            verify_hostname,
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        connect(tcp, addr, &settings).await.map(|_| ())
    }

    #[tokio::test]
    async fn certificates_are_checked_and_each_failure_is_named() {
        const LONG_AGO: (i32, u8, u8) = (2020, 1, 1);
        const FAR_AHEAD: (i32, u8, u8) = (2999, 1, 1);
        let (_d, ca, addr) = server(&["127.0.0.1"], LONG_AGO, FAR_AHEAD).await;
        handshake(&ca, &addr, true).await.unwrap();

        let (_d, ca, addr) = server(&["127.0.0.1"], LONG_AGO, (2021, 1, 1)).await;
        let e = handshake(&ca, &addr, true).await.unwrap_err();
        assert!(matches!(e, SecurityError::Expired), "{e}");
        assert!(e.to_string().contains("expired certificate"), "{e}");
        // Turning the host name check off does not accept an expired one.
        let e = handshake(&ca, &addr, false).await.unwrap_err();
        assert!(matches!(e, SecurityError::Expired), "{e}");

        let (_d, ca, addr) = server(&["broker.example"], LONG_AGO, FAR_AHEAD).await;
        let e = handshake(&ca, &addr, true).await.unwrap_err();
        assert!(
            matches!(e, SecurityError::HostNameMismatch(ref h) if h == "127.0.0.1"),
            "{e}"
        );
        handshake(&ca, &addr, false).await.unwrap();

        let (_d1, _, addr) = server(&["127.0.0.1"], LONG_AGO, FAR_AHEAD).await;
        let (_d2, other_ca, _) = server(&["127.0.0.1"], LONG_AGO, FAR_AHEAD).await;
        let e = handshake(&other_ca, &addr, false).await.unwrap_err();
        assert!(matches!(e, SecurityError::UnknownCa), "{e}");
    }

    #[test]
    fn unusable_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for ca in [&empty, &missing] {
            let s = TlsSettings {
                ca: Some(ca.clone()),
                client: None,
                verify_hostname: true,
            };
            let e = client_config(&s).unwrap_err().to_string();
            assert!(e.contains(&ca.display().to_string()), "{e}");
            assert!(e.contains("ssl.truststore.location"), "{e}");
        }
        let s = TlsSettings {
            ca: None,
            client: Some(ClientCertificate {
                certificate: missing.clone(),
                key: missing.clone(),
            }),
            verify_hostname: true,
        };
        // The system's roots may be absent on a bare machine: either error
        // names what to fix.
        let e = client_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") || e.contains("ssl.truststore.location"),
            "{e}"
        );
    }
}
