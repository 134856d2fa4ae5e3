//! The client side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677)
//! as Kafka brokers speak it (KIP-84): the messages and the proofs, no I/O.
//! `sasl.rs` carries them in SaslAuthenticate requests.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds for a credential's iteration count (its `ScramMechanism`):
/// a server asking for fewer is weak, one asking for more would only make
/// the client burn CPU.
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 16384;
/// A salt beyond this is not a salt (Kafka's are 64 bytes or less).
const MAX_SALT_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        match self {
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramHash::Sha512 => match Hmac::<Sha512>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server sent that a client must not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's first SCRAM message is malformed ({0})")]
    ServerFirst(&'static str),
    #[error("the server's SCRAM nonce does not extend ours (a replayed or foreign exchange)")]
    Nonce,
    #[error("the server asks for {0} SCRAM iterations; Kafka allows {MIN_ITERATIONS} to {MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("the server refused the SCRAM proof: {0}")]
    Refused(String),
    #[error("the server's final SCRAM message is malformed")]
    ServerFinal,
    #[error("the server's SCRAM signature is wrong: it does not know this user's credential (a server in the middle?)")]
    ServerSignature,
}

/// One exchange, from the client's first message to the check of the
/// server's signature.
pub struct ScramClient {
    hash: ScramHash,
    password: Vec<u8>,
    nonce: String,
    client_first_bare: String,
}

/// After the client's proof went out: what the server must sign.
pub struct ScramProof {
    hash: ScramHash,
    server_signature: Vec<u8>,
}

impl ScramClient {
    /// `nonce` must be fresh and random for every exchange (printable ASCII
    /// without a comma).
    pub fn new(hash: ScramHash, username: &str, password: &[u8], nonce: String) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", saslname(username));
        ScramClient {
            hash,
            password: password.to_vec(),
            nonce,
            client_first_bare,
        }
    }

    /// `n,,n=<user>,r=<nonce>`: no channel binding, no authorization id.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client's final message (with its proof) for the server's first.
    pub fn client_final(self, server_first: &[u8]) -> Result<(Vec<u8>, ScramProof), ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::ServerFirst("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                // A mandatory extension this client does not know.
                Some(("m", _)) => return Err(ScramError::ServerFirst("mandatory extension")),
                // Optional extensions are ignored, as RFC 5802 asks.
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::ServerFirst("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = salt.ok_or(ScramError::ServerFirst("no salt"))?;
        if salt.len() > MAX_SALT_BYTES * 2 {
            return Err(ScramError::ServerFirst("salt too long"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::ServerFirst("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::ServerFirst("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::ServerFirst("iteration count is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = h.salted_password(&self.password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        // "biws" is base64 of "n,,": the GS2 header of the first message.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", B64.encode(proof));
        Ok((
            message.into_bytes(),
            ScramProof {
                hash: h,
                server_signature,
            },
        ))
    }
}

impl ScramProof {
    /// The server proves it holds the credential too (`v=<signature>`), or
    /// says why it refused (`e=<reason>`).
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::ServerFinal)?;
        let first = text.split(',').next().unwrap_or_default();
        match first.split_once('=') {
            Some(("e", reason)) => Err(ScramError::Refused(reason.to_owned())),
            Some(("v", sig)) => {
                let sig = B64.decode(sig).map_err(|_| ScramError::ServerFinal)?;
                if sig.len() == self.server_signature.len()
                    && sig
                        .iter()
                        .zip(&self.server_signature)
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
                {
                    Ok(())
                } else {
                    Err(ScramError::ServerSignature)
                }
            }
            _ => Err(ScramError::ServerFinal),
        }
    }

    pub fn hash(&self) -> ScramHash {
        self.hash
    }
}

/// RFC 5802's `saslname`: `=` and `,` escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: 32 random printable characters without a comma.
pub fn nonce() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The SCRAM-SHA-256 example exchange of RFC 7677, section 3.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn rfc_client() -> ScramClient {
        ScramClient::new(ScramHash::Sha256, "user", b"pencil", NONCE.into())
    }

    #[test]
    fn the_rfc_7677_exchange() {
        let c = rfc_client();
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (last, proof) = c.client_final(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        proof
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            proof.verify(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            proof.verify(b"e=invalid-proof"),
            Err(ScramError::Refused("invalid-proof".into()))
        );
        assert_eq!(proof.verify(b"x"), Err(ScramError::ServerFinal));
    }

    #[test]
    fn a_server_first_that_cannot_be_trusted_is_refused() {
        let foreign = "r=someoneelse123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert!(matches!(
            rfc_client().client_final(foreign.as_bytes()),
            Err(ScramError::Nonce)
        ));
        let echoed = format!("r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert!(matches!(
            rfc_client().client_final(echoed.as_bytes()),
            Err(ScramError::Nonce)
        ));
        let costly = format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100000000");
        assert!(matches!(
            rfc_client().client_final(costly.as_bytes()),
            Err(ScramError::Iterations(100000000))
        ));
        let weak = format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1");
        assert!(matches!(
            rfc_client().client_final(weak.as_bytes()),
            Err(ScramError::Iterations(1))
        ));
        for bad in [
            "".to_string(),
            format!("r={NONCE}x,i=4096"),
            format!("r={NONCE}x,s=***,i=4096"),
            format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many"),
            format!("m=ext,r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        ] {
            assert!(
                matches!(
                    rfc_client().client_final(bad.as_bytes()),
                    Err(ScramError::ServerFirst(_))
                ),
                "{bad}"
            );
        }
        assert!(rfc_client().client_final(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn user_names_are_escaped() {
        let c = ScramClient::new(ScramHash::Sha512, "a=b,c", b"p", "n".into());
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
        assert_eq!(ScramHash::Sha512.mechanism(), "SCRAM-SHA-512");
    }

    #[test]
    fn nonces_are_fresh_and_printable() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
