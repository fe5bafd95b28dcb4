//! Who may connect and what they may do: the Origin policy, HS256 tokens (JWT) listing the
//! topics a client may subscribe and publish to, and the API key of `POST /publish`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which browser origins may open WebSockets (and `POST /publish`).
///
/// An origin is allowed when it names the same host as the request's `Host` header (a page
/// served by the hub itself), when it is in the allowed list (ignoring ASCII case), or when
/// the list holds `*`. Requests without `Origin` (non-browser clients) are allowed: the check
/// exists to stop cross-site WebSocket hijacking, which only browsers can be tricked into.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    any: bool,
}

/// The origin is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {0} is not allowed")]
pub struct OriginRefused(pub String);

impl OriginPolicy {
    /// A policy allowing the request's own host plus `allowed` (`*`: any origin).
    pub fn new(allowed: &[String]) -> OriginPolicy {
        OriginPolicy {
            any: allowed.iter().any(|a| a == "*"),
            allowed: allowed
                .iter()
                .map(|a| a.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// Checks a request's `Origin` against its `Host`.
    ///
    /// ```
    /// use fullduplex_hub::auth::OriginPolicy;
    /// let policy = OriginPolicy::new(&["https://app.example".to_owned()]);
    /// assert!(policy.check(None, Some("hub:8080")).is_ok());
    /// assert!(policy.check(Some("http://hub:8080"), Some("hub:8080")).is_ok());
    /// assert!(policy.check(Some("https://APP.example"), Some("hub:8080")).is_ok());
    /// assert!(policy.check(Some("https://evil.example"), Some("hub:8080")).is_err());
    /// ```
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(origin) = origin else {
            return Ok(());
        };
        if self.any || self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return Ok(());
        }
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .filter(|rest| !rest.is_empty() && !rest.contains('/'));
        match (authority, host) {
            (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host.trim()) => Ok(()),
            _ => Err(OriginRefused(origin.to_owned())),
        }
    }
}

/// A topic pattern from a token: `*` (any topic), `prefix*` (topics starting with prefix) or
/// an exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// A pattern from its text.
    pub fn new(pattern: &str) -> TopicPattern {
        TopicPattern(pattern.to_owned())
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => self.0 == topic,
        }
    }
}

/// What a connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    subscribe: Vec<TopicPattern>,
    publish: Vec<TopicPattern>,
    user: Option<Arc<str>>,
}

impl Grants {
    /// Everything (no token secret configured).
    pub fn all() -> Grants {
        Grants {
            subscribe: vec![TopicPattern::new("*")],
            publish: vec![TopicPattern::new("*")],
            user: None,
        }
    }

    /// Grants from pattern lists.
    pub fn new(subscribe: &[&str], publish: &[&str]) -> Grants {
        Grants {
            subscribe: subscribe.iter().map(|p| TopicPattern::new(p)).collect(),
            publish: publish.iter().map(|p| TopicPattern::new(p)).collect(),
            user: None,
        }
    }

    /// The user the token names (its `sub` claim), if any.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// Whether the connection may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    /// Whether the connection may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in the query, cookie or `Authorization` header.
    #[error("a token is required")]
    Missing,
    /// Not three base64url parts, or the header or claims are not the expected JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `HS256`.
    #[error("token algorithm must be HS256")]
    Algorithm,
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

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Verifies HS256 JSON Web Tokens (RFC 7519) signed with the hub's secret.
///
/// The claims `subscribe` and `publish` are lists of [`TopicPattern`]s; `exp` and `nbf`
/// (seconds since 1970) are checked when present. Other claims are ignored.
#[derive(Clone)]
pub struct TokenVerifier {
    key: HmacSha256,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { key: <secret> }")
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> TokenVerifier {
        TokenVerifier {
            // HMAC takes keys of any length.
            key: <HmacSha256 as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    /// Checks `token` at time `now` (seconds since 1970) and returns its grants.
    ///
    /// ```
    /// use fullduplex_hub::auth::{sign_token, TokenVerifier};
    /// let token = sign_token(b"secret", &serde_json::json!({"subscribe": ["chat.*"]}));
    /// let grants = TokenVerifier::new(b"secret").verify(&token, 0)?;
    /// assert!(grants.may_subscribe("chat.lobby"));
    /// assert!(!grants.may_publish("chat.lobby"));
    /// assert!(TokenVerifier::new(b"other").verify(&token, 0).is_err());
    /// # Ok::<(), fullduplex_hub::auth::TokenError>(())
    /// ```
    pub fn verify(&self, token: &str, now: u64) -> Result<Grants, TokenError> {
        let mut parts = token.trim().splitn(3, '.');
        let (Some(header), Some(claims), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let decode = |part: &str, what| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| TokenError::Malformed(what))
        };
        let header_json = decode(header, "header is not base64url")?;
        let header_value: Header = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
        if header_value.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signature = decode(signature, "signature is not base64url")?;
        let mut mac = self.key.clone();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(claims.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let claims_json = decode(claims, "claims are not base64url")?;
        let claims: Claims = serde_json::from_slice(&claims_json)
            .map_err(|_| TokenError::Malformed("claims are not the expected JSON object"))?;
        let now = now as f64;
        if claims.exp.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now < nbf) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Grants {
            subscribe: claims
                .subscribe
                .iter()
                .map(|p| TopicPattern::new(p))
                .collect(),
            publish: claims
                .publish
                .iter()
                .map(|p| TopicPattern::new(p))
                .collect(),
            user: claims.sub.map(Arc::from),
        })
    }
}

/// Signs `claims` as an HS256 JWT with `secret`: for tools and tests that make tokens.
pub fn sign_token(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{signature}")
}

/// The token of a request: the `token` query parameter, else the `token` cookie, else
/// `Authorization: Bearer ...`.
pub fn find_token<'a>(
    query: Option<&'a str>,
    cookies: impl Iterator<Item = (&'a str, &'a str)>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    let from_query = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    });
    from_query
        .or_else(|| {
            let mut cookies = cookies;
            cookies.find(|(name, _)| *name == "token").map(|(_, v)| v)
        })
        .or_else(|| bearer(authorization))
        .filter(|token| !token.is_empty())
}

/// The credentials of `Authorization: Bearer CREDENTIALS` (scheme in any case).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, credentials) = authorization?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origin_policy() {
        let none = OriginPolicy::new(&[]);
        assert!(none
            .check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"))
            .is_ok());
        assert!(none
            .check(Some("http://LOCALHOST:8080"), Some("localhost:8080"))
            .is_ok());
        assert!(none
            .check(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080"))
            .is_err());
        assert!(none.check(Some("null"), Some("127.0.0.1:8080")).is_err());
        assert!(none.check(Some("http://127.0.0.1:8080"), None).is_err());
        assert!(none.check(Some("http://h/x"), Some("h")).is_err());
        assert!(none.check(None, None).is_ok());
        let any = OriginPolicy::new(&["*".to_owned()]);
        assert!(any.check(Some("https://evil.example"), Some("h")).is_ok());
        let listed = OriginPolicy::new(&["https://app.example/".to_owned()]);
        assert!(listed.check(Some("https://app.example"), Some("h")).is_ok());
    }

    #[test]
    fn patterns() {
        let grants = Grants::new(&["chat.*", "news"], &["*"]);
        assert!(grants.may_subscribe("chat.a"));
        assert!(grants.may_subscribe("news"));
        assert!(!grants.may_subscribe("newsletter"));
        assert!(!grants.may_subscribe("chat"));
        assert!(grants.may_publish("anything"));
        assert!(!Grants::new(&[], &[]).may_subscribe("x"));
    }

    #[test]
    fn tokens() {
        let verifier = TokenVerifier::new(b"k");
        let token = sign_token(
            b"k",
            &json!({"sub": "ann", "exp": 100, "nbf": 10, "subscribe": ["a"], "publish": ["b*"]}),
        );
        let grants = verifier.verify(&token, 50).unwrap();
        assert!(grants.may_subscribe("a") && !grants.may_subscribe("b"));
        assert!(grants.may_publish("bb") && !grants.may_publish("a"));
        assert_eq!(verifier.verify(&token, 100), Err(TokenError::Expired));
        assert_eq!(verifier.verify(&token, 5), Err(TokenError::NotYetValid));
        // Tampered claims.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"subscribe": ["*"]}).to_string());
        parts[1] = &forged;
        assert_eq!(
            verifier.verify(&parts.join("."), 50),
            Err(TokenError::Signature)
        );
        // alg none.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let unsigned = format!("{none_header}.{forged}.");
        assert_eq!(verifier.verify(&unsigned, 50), Err(TokenError::Algorithm));
        assert!(matches!(
            verifier.verify("abc", 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify("a.b.c", 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify("", 0),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn token_sources() {
        let cookies = || [("a", "1"), ("token", "from-cookie")].into_iter();
        assert_eq!(
            find_token(Some("x=1&token=from-query"), cookies(), Some("Bearer h")),
            Some("from-query")
        );
        assert_eq!(
            find_token(Some("x=1"), cookies(), None),
            Some("from-cookie")
        );
        assert_eq!(
            find_token(None, std::iter::empty(), Some("bearer  from-header ")),
            Some("from-header")
        );
        assert_eq!(find_token(None, std::iter::empty(), Some("Basic x")), None);
        assert_eq!(find_token(Some("token="), std::iter::empty(), None), None);
    }

    #[test]
    fn secrets_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
