//! How `jsonwebtoken` signs ES256 here: with p256's ECDSA signing key, parsed once per key.
//!
//! jsonwebtoken's RustCrypto backend parses the PKCS#8 key again for every token (deriving its
//! public key, a scalar multiplication) and signs with public-key recovery (more of them), which
//! made an exchange (two signatures) cost about 0.5 ms of CPU. Its documented extension point,
//! a [`CryptoProvider`], lets the same p256 crate sign with a key kept parsed; everything else
//! (verification, key utilities, other algorithms) stays the backend's own. No cryptography is
//! done here: p256 signs, this module only keeps its keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer};
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;

/// Keys parsed so far, by their PKCS#8 DER. A key set holds a handful; past this many (keys
/// rotated for months in one process) the map starts afresh.
const MAX_KEYS: usize = 64;

static PARSED: OnceLock<Mutex<HashMap<Vec<u8>, Arc<SigningKey>>>> = OnceLock::new();
static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();

/// Makes this module's signer jsonwebtoken's, once per process, before jsonwebtoken is first
/// used (it settles on its default provider at first use). Called by every path that signs,
/// checks or publishes keys.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let provider = PROVIDER.get_or_init(|| CryptoProvider { signer_factory: signer, ..DEFAULT_PROVIDER.clone() });
        if provider.install_default().is_err() {
            tracing::warn!("jsonwebtoken's provider was chosen before ours: ES256 signing takes the slower path");
        }
    });
}

/// One parsed key, signing without recovery (a JWS signature is `r || s`, RFC 7518 3.4).
struct Es256(Arc<SigningKey>);

impl Signer<Vec<u8>> for Es256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let signature: Signature = self.0.try_sign(message)?;
        Ok(signature.to_vec())
    }
}

impl JwtSigner for Es256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::ES256 {
        return (DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    let mut parsed = PARSED.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(signing) = parsed.get(key.as_bytes()) {
        return Ok(Box::new(Es256(signing.clone())));
    }
    let signing = Arc::new(SigningKey::from_pkcs8_der(key.as_bytes()).map_err(|_| ErrorKind::InvalidEcdsaKey)?);
    if parsed.len() >= MAX_KEYS {
        parsed.clear();
    }
    parsed.insert(key.as_bytes().to_vec(), signing.clone());
    Ok(Box::new(Es256(signing)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{KeySet, Stored, StoredKey};

    #[test]
    fn tokens_signed_here_verify_with_the_published_key_and_a_parsed_key_is_reused() {
        install();
        let key = StoredKey::generate(jiff::Timestamp::now()).expect("key");
        let set = KeySet::from_stored("s", &Stored { keys: vec![key] }).expect("set");
        let signing = &set.keys[0];
        let header = jsonwebtoken::Header::new(Algorithm::ES256);
        let claims = serde_json::json!({"sub": "x", "exp": 4_102_444_800_i64});
        let first = jsonwebtoken::encode(&header, &claims, signing.encoding()).expect("sign");
        let second = jsonwebtoken::encode(&header, &claims, signing.encoding()).expect("sign again");
        let validation = {
            let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
            validation.validate_aud = false;
            validation
        };
        for token in [&first, &second] {
            let decoded = jsonwebtoken::decode::<serde_json::Value>(token, &signing.decoding, &validation);
            assert_eq!(decoded.expect("verifies").claims["sub"], "x");
        }
        let parsed = PARSED.get().expect("parsed keys").lock().unwrap();
        assert!(parsed.contains_key(signing.encoding().as_bytes()), "the key is kept parsed");
    }
}
