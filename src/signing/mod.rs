//! The signing keys of token exchange: the layout of their Secret, shared by the controller
//! (which alone writes it, see [`schedule`] for when) and the verifier (which signs and checks
//! access tokens with it).
//!
//! The Secret `keyward-signing-keys` (`--signing-secret`), of type `keyward.io/signing-keys`,
//! holds one entry, `keys.json`:
//!
//! ```json
//! {"keys": [{"kid": "<RFC 7638 thumbprint>", "signsFrom": "2026-12-01T00:00:00Z",
//!            "privateKey": "-----BEGIN PRIVATE KEY-----\n..."}]}
//! ```
//!
//! Each key is a P-256 key in PKCS#8 PEM. It signs from `signsFrom` until the next key's
//! `signsFrom`; a key waiting to sign is published (in the JWKS) already, and a retired key stays
//! until every token it signed has expired.
//!
//! Private keys exist only in that Secret and in [`KeySet`] in memory: [`PrivateKey`] prints as
//! `[redacted]`, and nothing here puts one in an error.

pub mod keeper;
pub mod schedule;
pub mod signer;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

/// Default name of the Secret (`--signing-secret`).
pub const DEFAULT_SECRET_NAME: &str = "keyward-signing-keys";
/// Type of the Secret.
pub const SECRET_TYPE: &str = "keyward.io/signing-keys";
/// The Secret's one data entry.
pub const DATA_KEY: &str = "keys.json";
/// The only signing algorithm.
pub const ALGORITHM: Algorithm = Algorithm::ES256;

/// Longest access token lifetime (`--access-token-ttl` at most).
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(2 * 3_600);
/// Longest `--refresh-grace`: a refresh token expires that long after its access token.
pub const MAX_REFRESH_GRACE: Duration = Duration::from_secs(24 * 3_600);
/// Longest life of any token a key signs, so the default time a retired key is kept
/// (`--signing-key-retain`).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(MAX_ACCESS_TTL.as_secs() + MAX_REFRESH_GRACE.as_secs());

/// Why a signing Secret cannot be used. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("Secret {0} has type {1:?}, not {SECRET_TYPE}; it is not ours and is left alone")]
    NotOurs(String, String),
    #[error("Secret {0} has no data entry {DATA_KEY}")]
    Missing(String),
    #[error("Secret {secret}: {DATA_KEY} is not a key set: {reason}")]
    Malformed { secret: String, reason: String },
    #[error("Secret {secret}: key {kid}: {reason}")]
    BadKey { secret: String, kid: String, reason: String },
}

/// A PKCS#8 PEM private key: printed as `[redacted]`, exposed only to build signing keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKey(String);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredKey {
    pub kid: String,
    #[serde(with = "timestamp")]
    pub signs_from: Timestamp,
    pub private_key: PrivateKey,
}

/// `keys.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub keys: Vec<StoredKey>,
}

mod timestamp {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl StoredKey {
    /// A new P-256 key from the OS CSPRNG that signs from `signs_from` (whole seconds).
    pub fn generate(signs_from: Timestamp) -> Result<Self, String> {
        use p256::elliptic_curve::Generate as _;
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::try_generate_from_rng(&mut rand::rngs::SysRng)
            .map_err(|error| format!("the OS random number generator failed: {error}"))?;
        let pem = secret
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| "cannot encode a new private key as PKCS#8".to_string())?;
        let private_key = PrivateKey(pem.to_string());
        let kid = thumbprint(&public_jwk(&private_key).map_err(|reason| reason.to_string())?)?;
        let signs_from = Timestamp::from_second(signs_from.as_second()).unwrap_or(signs_from);
        Ok(Self { kid, signs_from, private_key })
    }
}

fn encoding_key(private: &PrivateKey) -> Result<EncodingKey, &'static str> {
    // Every use of jsonwebtoken goes through a key made here: ours is its signer from the start.
    signer::install();
    EncodingKey::from_ec_pem(private.0.as_bytes()).map_err(|_| "privateKey is not a PKCS#8 PEM P-256 key")
}

fn public_jwk(private: &PrivateKey) -> Result<Jwk, &'static str> {
    let encoding = encoding_key(private)?;
    Jwk::from_encoding_key(&encoding, ALGORITHM).map_err(|_| "privateKey is not a P-256 key")
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public key.
fn thumbprint(jwk: &Jwk) -> Result<String, String> {
    jwk.thumbprint(ThumbprintHash::SHA256).map_err(|error| format!("cannot compute a key thumbprint: {error}"))
}

/// A usable key: what signs, what checks, and what is published.
pub struct SigningKey {
    pub kid: String,
    pub signs_from: Timestamp,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key as published, with `kid`, `alg` and `use`.
    pub public: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("signs_from", &self.signs_from)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// Every key of the Secret, oldest first.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<SigningKey>,
}

impl KeySet {
    /// Reads the Secret `secret` (named `name` in errors), refusing anything that is not a key
    /// set this module wrote: wrong type, a malformed document, a key whose `kid` is not its
    /// thumbprint, two keys with one `kid`.
    pub fn from_secret(name: &str, secret: &Secret) -> Result<Self, KeysError> {
        let stored = read_stored(name, secret)?;
        Self::from_stored(name, &stored)
    }

    pub fn from_stored(name: &str, stored: &Stored) -> Result<Self, KeysError> {
        let bad = |kid: &str, reason: &str| KeysError::BadKey {
            secret: name.to_string(),
            kid: kid.to_string(),
            reason: reason.to_string(),
        };
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(stored.keys.len());
        for key in &stored.keys {
            if !seen.insert(key.kid.as_str()) {
                return Err(bad(&key.kid, "two keys have this kid"));
            }
            let encoding = encoding_key(&key.private_key).map_err(|reason| bad(&key.kid, reason))?;
            let mut public = public_jwk(&key.private_key).map_err(|reason| bad(&key.kid, reason))?;
            if thumbprint(&public).ok().as_deref() != Some(key.kid.as_str()) {
                return Err(bad(&key.kid, "kid is not the RFC 7638 thumbprint of the key"));
            }
            public.common.key_id = Some(key.kid.clone());
            public.common.key_algorithm = Some(KeyAlgorithm::ES256);
            public.common.public_key_use = Some(PublicKeyUse::Signature);
            let decoding = DecodingKey::from_jwk(&public).map_err(|_| bad(&key.kid, "cannot use the public key"))?;
            keys.push(SigningKey { kid: key.kid.clone(), signs_from: key.signs_from, encoding, decoding, public });
        }
        keys.sort_by_key(|key| key.signs_from);
        Ok(Self { keys })
    }

    /// The key that signs at `now`: the newest whose `signsFrom` has come, else (a clock behind
    /// the controller's) the first to come.
    pub fn current(&self, now: Timestamp) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|key| key.signs_from <= now).or_else(|| self.keys.first())
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// The public keys (`/.well-known/jwks.json`): current, next and retired keys still kept.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.iter().map(|key| key.public.clone()).collect() }
    }
}

/// The stored document of a Secret.
pub fn read_stored(name: &str, secret: &Secret) -> Result<Stored, KeysError> {
    let kind = secret.type_.clone().unwrap_or_default();
    if kind != SECRET_TYPE {
        return Err(KeysError::NotOurs(name.to_string(), kind));
    }
    let data =
        secret.data.as_ref().and_then(|data| data.get(DATA_KEY)).ok_or_else(|| KeysError::Missing(name.into()))?;
    serde_json::from_slice(&data.0).map_err(|error| KeysError::Malformed {
        secret: name.to_string(),
        // serde_json names the position and what it expected, never the text it read.
        reason: error.to_string(),
    })
}

/// The Secret's data for `stored`.
pub fn secret_data(stored: &Stored) -> BTreeMap<String, ByteString> {
    let json = serde_json::to_vec(stored).unwrap_or_default();
    BTreeMap::from([(DATA_KEY.to_string(), ByteString(json))])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(stored: &Stored) -> Secret {
        Secret { type_: Some(SECRET_TYPE.into()), data: Some(secret_data(stored)), ..Default::default() }
    }

    #[test]
    fn a_generated_key_round_trips_through_the_secret_with_its_thumbprint_as_kid() {
        let key = StoredKey::generate("2026-12-01T00:00:00.7Z".parse().unwrap()).expect("key");
        assert_eq!(key.signs_from, "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap());
        let stored = Stored { keys: vec![key.clone()] };
        let set = KeySet::from_secret("s", &secret(&stored)).expect("key set");
        assert_eq!(set.keys[0].kid, key.kid);
        assert_eq!(key.kid.len(), 43, "base64url SHA-256");
        let jwks = serde_json::to_value(set.jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("EC"), Some("P-256")));
        assert_eq!((jwk["kid"].as_str(), jwk["alg"].as_str()), (Some(key.kid.as_str()), Some("ES256")));
        assert!(jwk.get("d").is_none(), "the JWKS holds no private part: {jwk}");
    }

    #[test]
    fn the_current_key_is_the_newest_that_has_begun_to_sign() {
        let (a, b) = (
            StoredKey::generate("2026-12-01T00:00:00Z".parse().unwrap()).unwrap(),
            StoredKey::generate("2026-12-31T00:00:00Z".parse().unwrap()).unwrap(),
        );
        let set = KeySet::from_stored("s", &Stored { keys: vec![b.clone(), a.clone()] }).unwrap();
        let at = |t: &str| set.current(t.parse().unwrap()).map(|k| k.kid.clone());
        assert_eq!(at("2026-12-30T23:59:59Z"), Some(a.kid.clone()));
        assert_eq!(at("2026-12-31T00:00:00Z"), Some(b.kid.clone()));
        assert_eq!(at("2026-11-30T00:00:00Z"), Some(a.kid), "a clock behind still signs with the first key");
    }

    #[test]
    fn secrets_that_are_not_a_key_set_are_refused_without_echoing_their_content() {
        let key = StoredKey::generate(Timestamp::now()).unwrap();
        let mut wrong_type = secret(&Stored { keys: vec![key.clone()] });
        wrong_type.type_ = Some("Opaque".into());
        assert!(matches!(KeySet::from_secret("s", &wrong_type), Err(KeysError::NotOurs(..))));

        let mut forged = key.clone();
        forged.kid = "not-the-thumbprint".into();
        let error = KeySet::from_stored("s", &Stored { keys: vec![forged] }).unwrap_err();
        assert!(error.to_string().contains("thumbprint"), "{error}");

        let twice = Stored { keys: vec![key.clone(), key.clone()] };
        assert!(KeySet::from_stored("s", &twice).unwrap_err().to_string().contains("two keys"));

        let mut garbage = secret(&Stored::default());
        let pem = key.private_key.0.clone();
        garbage.data = Some(BTreeMap::from([(DATA_KEY.into(), ByteString(format!("{{\"keys\": {pem}").into_bytes()))]));
        let error = KeySet::from_secret("s", &garbage).unwrap_err().to_string();
        assert!(!error.contains("PRIVATE") && !error.contains(&pem[40..60]), "{error}");

        let mut bad_pem = key;
        bad_pem.private_key = PrivateKey("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into());
        let error = KeySet::from_stored("s", &Stored { keys: vec![bad_pem] }).unwrap_err().to_string();
        assert!(error.contains("PKCS#8") && !error.contains("AAAA"), "{error}");
    }

    #[test]
    fn private_keys_never_print() {
        let key = StoredKey::generate(Timestamp::now()).unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let set = KeySet::from_stored("s", &Stored { keys: vec![key] }).unwrap();
        assert!(!format!("{set:?}").contains("PRIVATE"));
    }
}
