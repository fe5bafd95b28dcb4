//! Tokens (JSON Web Tokens, RFC 7519): HS256 with a shared secret, RS256 and ES256 with
//! public keys from PEM files or from a JWKS URL.
//!
//! The token's `alg` chooses the key: HS256 only the secret, RS256 only RSA keys, ES256
//! only P-256 keys; anything else (`none` included) is refused, and so is an HS256 token
//! made with a public key as its secret. With a JWKS, a token's `kid` names its key; an
//! unknown `kid` makes the verifier fetch the JWKS again (at most once per
//! [`JWKS_REFETCH_PAUSE`]); the document is bounded to [`JWKS_MAX_BYTES`] and
//! [`JWKS_MAX_KEYS`] keys and must arrive within [`JWKS_TIMEOUT`].
//!
//! Claims: `sub` (the user), `exp` and `nbf` (checked, no leeway), `subscribe` and `publish`
//! (lists of topic patterns).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::Grants;
use crate::fetch;

/// Largest JWKS document.
pub const JWKS_MAX_BYTES: usize = 1 << 20;
/// Most keys taken from a JWKS.
pub const JWKS_MAX_KEYS: usize = 100;
/// How long fetching the JWKS may take.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two fetches of the JWKS.
pub const JWKS_REFETCH_PAUSE: Duration = Duration::from_secs(10);

/// Where the keys come from.
#[derive(Debug, Clone, Default)]
pub struct TokenConfig {
    /// HS256 secret.
    pub secret: Option<String>,
    /// PEM public keys (RSA for RS256, EC P-256 for ES256).
    pub public_keys: Vec<String>,
    /// A JWKS URL (`http://` or `https://`) for RS256 and ES256 keys named by `kid`.
    pub jwks_url: Option<String>,
}

impl TokenConfig {
    /// Whether tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some() || !self.public_keys.is_empty() || self.jwks_url.is_some()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token in the query, cookie or `Authorization` header.
    #[error("a token is required")]
    Missing,
    /// Not a JWT, or its claims are not the expected JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not one this server accepts with its keys.
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key for the token (unknown `kid`).
    #[error("no key for this token: {0}")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("bad token signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
}

/// A configured key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token key: {0}")]
pub struct KeyError(String);

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Keys fetched from the JWKS.
#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

/// Verifies tokens with the configured keys.
pub struct TokenVerifier {
    secret: Option<DecodingKey>,
    rsa: Vec<DecodingKey>,
    ec: Vec<DecodingKey>,
    jwks_url: Option<String>,
    jwks: Mutex<JwksCache>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("secret", &self.secret.is_some())
            .field("rsa_keys", &self.rsa.len())
            .field("ec_keys", &self.ec.len())
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TokenVerifier {
    /// A verifier for `config`.
    ///
    /// # Errors
    /// [`KeyError`] when a PEM key is neither an RSA nor an EC public key.
    pub fn new(config: &TokenConfig) -> Result<TokenVerifier, KeyError> {
        let mut rsa = Vec::new();
        let mut ec = Vec::new();
        for pem in &config.public_keys {
            if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                rsa.push(key);
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                ec.push(key);
            } else {
                return Err(KeyError(
                    "a public key is neither RSA nor EC (PEM, SubjectPublicKeyInfo)".into(),
                ));
            }
        }
        Ok(TokenVerifier {
            secret: config
                .secret
                .as_deref()
                .map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            rsa,
            ec,
            jwks_url: config.jwks_url.clone(),
            jwks: Mutex::new(JwksCache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks `token` now and returns its grants.
    ///
    /// # Errors
    /// [`TokenError`].
    ///
    /// # Cancel safety
    /// Cancel-safe (a JWKS fetch in progress is dropped).
    pub async fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let header =
            jsonwebtoken::decode_header(token.trim()).map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm("unknown".into())
                }
                _ => TokenError::Malformed(error.to_string()),
            })?;
        let alg = header.alg;
        let keys: Vec<DecodingKey> = match alg {
            Algorithm::HS256 => self.secret.iter().cloned().collect(),
            Algorithm::RS256 | Algorithm::ES256 => match (&self.jwks_url, header.kid.as_deref()) {
                (Some(_), Some(kid)) => vec![self.jwks_key(kid, alg).await?],
                _ if alg == Algorithm::RS256 => self.rsa.clone(),
                _ => self.ec.clone(),
            },
            other => return Err(TokenError::Algorithm(format!("{other:?}"))),
        };
        if keys.is_empty() {
            return Err(TokenError::Algorithm(format!("{alg:?}")));
        }
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        let mut last = TokenError::Signature;
        for key in &keys {
            match jsonwebtoken::decode::<Claims>(token.trim(), key, &validation) {
                Ok(data) => return Ok(grants(data.claims)),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match error.kind() {
                        ErrorKind::InvalidSignature => TokenError::Signature,
                        ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                        ErrorKind::ImmatureSignature => return Err(TokenError::NotYetValid),
                        ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{alg:?}")),
                        _ => TokenError::Malformed(error.to_string()),
                    };
                }
            }
        }
        Err(last)
    }

    /// The JWKS key `kid` for `alg`, fetching the JWKS again when it is not known.
    async fn jwks_key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        let known = |cache: &JwksCache| -> Option<Result<DecodingKey, TokenError>> {
            cache.keys.get(kid).map(|(key_alg, key)| {
                if *key_alg == alg {
                    Ok(key.clone())
                } else {
                    Err(TokenError::Algorithm(format!(
                        "{alg:?} with a {key_alg:?} key"
                    )))
                }
            })
        };
        if let Some(found) = known(&lock(&self.jwks)) {
            return found;
        }
        let _one_at_a_time = self.fetching.lock().await;
        {
            let cache = lock(&self.jwks);
            if let Some(found) = known(&cache) {
                return found;
            }
            if cache
                .fetched
                .is_some_and(|at| at.elapsed() < JWKS_REFETCH_PAUSE)
            {
                return Err(TokenError::UnknownKey(kid.to_owned()));
            }
        }
        let keys = self.fetch_jwks().await;
        let mut cache = lock(&self.jwks);
        cache.fetched = Some(Instant::now());
        match keys {
            Ok(keys) => cache.keys = keys,
            Err(error) => tracing::warn!(%error, "tokens: cannot fetch the JWKS"),
        }
        known(&cache).unwrap_or_else(|| Err(TokenError::UnknownKey(kid.to_owned())))
    }

    async fn fetch_jwks(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let url = self.jwks_url.as_deref().ok_or("no JWKS URL")?;
        let answer = fetch::request(
            http::Method::GET,
            url,
            &[("accept", "application/json")],
            bytes::Bytes::new(),
            JWKS_MAX_BYTES,
            JWKS_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !answer.status.is_success() {
            return Err(format!("{url}: {}", answer.status));
        }
        let set: JwkSet = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
        Ok(jwks_keys(&set))
    }
}

/// The usable keys of a JWKS: those with a `kid`, RSA (RS256) or EC P-256 (ES256), at most
/// [`JWKS_MAX_KEYS`].
fn jwks_keys(set: &JwkSet) -> HashMap<String, (Algorithm, DecodingKey)> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, (alg, key)))
        })
        .take(JWKS_MAX_KEYS)
        .collect()
}

fn grants(claims: Claims) -> Grants {
    let subscribe: Vec<&str> = claims.subscribe.iter().map(String::as_str).collect();
    let publish: Vec<&str> = claims.publish.iter().map(String::as_str).collect();
    Grants::new(&subscribe, &publish)
        .with_user(claims.sub.map(std::sync::Arc::from))
        .with_expiry(claims.exp)
}

/// Signs `claims` as an HS256 JWT with `secret`: for tools and tests that make tokens.
pub fn sign_token(secret: &[u8], claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
        .unwrap_or_else(|_| unreachable!("HS256 signs any JSON value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verifier(secret: &str) -> TokenVerifier {
        let config = TokenConfig {
            secret: Some(secret.into()),
            ..TokenConfig::default()
        };
        TokenVerifier::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    #[tokio::test]
    async fn hs256_claims_and_limits() {
        let token = sign_token(
            b"secret",
            &json!({"sub": "ann", "exp": now() + 60, "subscribe": ["a"], "publish": ["b*"]}),
        );
        let grants = verifier("secret")
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(grants.may_subscribe("a"));
        assert!(!grants.may_subscribe("b"));
        assert!(grants.may_publish("bee"));
        assert_eq!(grants.user().map(|u| &**u), Some("ann"));
        assert_eq!(grants.expires(), Some(now() + 60));
        assert_eq!(
            verifier("other").verify(&token).await.err(),
            Some(TokenError::Signature)
        );
        let expired = sign_token(b"secret", &json!({"exp": now() - 1}));
        assert_eq!(
            verifier("secret").verify(&expired).await.err(),
            Some(TokenError::Expired)
        );
        let early = sign_token(b"secret", &json!({"nbf": now() + 60}));
        assert_eq!(
            verifier("secret").verify(&early).await.err(),
            Some(TokenError::NotYetValid)
        );
        assert!(matches!(
            verifier("secret").verify("not a token").await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn alg_none_and_unknown_algorithms_are_refused() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let encode = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = encode(json!({"subscribe": ["*"]}));
        for alg in ["none", "None", "HS512X", "XYZ"] {
            let token = format!("{}.{claims}.", encode(json!({"alg": alg, "typ": "JWT"})));
            assert!(
                matches!(
                    verifier("secret").verify(&token).await,
                    Err(TokenError::Algorithm(_) | TokenError::Malformed(_))
                ),
                "{alg}"
            );
        }
        // An algorithm jsonwebtoken knows, but this server has no key for.
        let token = format!("{}.{claims}.x", encode(json!({"alg": "HS384"})));
        assert!(matches!(
            verifier("secret").verify(&token).await,
            Err(TokenError::Algorithm(_))
        ));
    }
}
