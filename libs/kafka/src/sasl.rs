//! SASL on a new connection, after ApiVersions (which a broker answers
//! before authentication): SaslHandshake v1 names the mechanism, then
//! SaslAuthenticate carries its messages (KIP-152). The secret is read from
//! its file or variable here, once per connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Connection;
use crate::error::KafkaError;
use crate::scram::{self, ScramClient};
use crate::security::{SaslSettings, SecurityError};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

impl Connection {
    fn security_error(&self, e: SecurityError) -> KafkaError {
        KafkaError::Security {
            broker: self.addr().to_owned(),
            source: Arc::new(e),
        }
    }

    /// Authenticates the connection; the session's lifetime when the broker
    /// sets one (`connections.max.reauth.ms`, KIP-368).
    pub(crate) async fn authenticate(
        &self,
        sasl: &SaslSettings,
        timeout: Duration,
    ) -> Result<Option<Duration>, KafkaError> {
        let mechanism = sasl.mechanism();
        // v0 would carry the tokens without SaslAuthenticate framing.
        if self
            .version_range(ApiKey::SaslHandshake)
            .is_none_or(|(_, max)| max < 1)
        {
            return Err(KafkaError::UnsupportedVersion {
                api: ApiKey::SaslHandshake,
                broker: self.addr().to_owned(),
            });
        }
        let mut req = SaslHandshakeRequest::default();
        req.mechanism = StrBytes::from_static_str(mechanism);
        let frame = self
            .enqueue_raw(ApiKey::SaslHandshake, 1, &req, timeout)
            .await?;
        let resp: SaslHandshakeResponse = self.decode(ApiKey::SaslHandshake, 1, frame)?;
        if resp.error_code == UNSUPPORTED_SASL_MECHANISM {
            let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(self.security_error(SecurityError::MechanismNotEnabled {
                mechanism,
                enabled: enabled.join(", "),
            }));
        }
        KafkaError::check(resp.error_code, None)?;
        let version = self
            .version_range(ApiKey::SaslAuthenticate)
            .map(|(_, max)| max)
            .ok_or_else(|| KafkaError::UnsupportedVersion {
                api: ApiKey::SaslAuthenticate,
                broker: self.addr().to_owned(),
            })?;
        let secret = |s: &crate::security::Secret| {
            s.read()
                .map_err(|e| self.security_error(SecurityError::Secret(e)))
        };
        let lifetime = match sasl {
            SaslSettings::Plain { username, password } => {
                let password = secret(password)?;
                // authzid (empty), authcid, password (RFC 4616).
                let msg = format!("\0{username}\0{password}");
                self.sasl_round(mechanism, version, msg.into_bytes(), timeout)
                    .await?
                    .1
            }
            SaslSettings::Scram {
                hash,
                username,
                password,
            } => {
                let password = secret(password)?;
                let client = ScramClient::new(*hash, username, password.as_bytes(), scram::nonce());
                let scram_err =
                    |source| self.security_error(SecurityError::Scram { mechanism, source });
                let (server_first, _) = self
                    .sasl_round(mechanism, version, client.client_first(), timeout)
                    .await?;
                let (last, proof) = client.client_final(&server_first).map_err(scram_err)?;
                let (server_final, lifetime) =
                    self.sasl_round(mechanism, version, last, timeout).await?;
                proof.verify(&server_final).map_err(scram_err)?;
                lifetime
            }
            SaslSettings::OAuthBearer { token } => {
                let token = secret(token)?;
                // RFC 7628's initial client response, no authzid.
                let msg = format!("n,,\x01auth=Bearer {}\x01\x01", token.trim());
                self.sasl_round(mechanism, version, msg.into_bytes(), timeout)
                    .await?
                    .1
            }
        };
        Ok(lifetime)
    }

    /// One SaslAuthenticate exchange: the server's bytes and the session
    /// lifetime it gives (v1 and later).
    async fn sasl_round(
        &self,
        mechanism: &'static str,
        version: i16,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<(Bytes, Option<Duration>), KafkaError> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        let frame = self
            .enqueue_raw(ApiKey::SaslAuthenticate, version, &req, timeout)
            .await?;
        let resp: SaslAuthenticateResponse =
            self.decode(ApiKey::SaslAuthenticate, version, frame)?;
        let message = resp.error_message.as_ref().map(|m| m.to_string());
        if resp.error_code == SASL_AUTHENTICATION_FAILED {
            return Err(self.security_error(SecurityError::AuthenticationFailed {
                mechanism,
                message: message.unwrap_or_else(|| "no reason given".into()),
            }));
        }
        KafkaError::check(resp.error_code, message.as_deref())?;
        let lifetime = (resp.session_lifetime_ms > 0)
            .then(|| Duration::from_millis(resp.session_lifetime_ms as u64));
        Ok((resp.auth_bytes, lifetime))
    }
}
