//! Who may connect and what they may do: the Origin policy, the grants a token gives (topic
//! patterns, the user, the expiry; tokens themselves are checked in
//! [`tokens`](crate::tokens)), where a request carries its token, and the API key.

use std::sync::Arc;

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
///
/// The pattern lists are shared: every connection without a token holds the same two
/// lists, and a clone costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    subscribe: Arc<[TopicPattern]>,
    publish: Arc<[TopicPattern]>,
    user: Option<Arc<str>>,
    expires: Option<u64>,
}

impl Grants {
    /// Everything (no token secret configured).
    pub fn all() -> Grants {
        static ALL: std::sync::LazyLock<Arc<[TopicPattern]>> =
            std::sync::LazyLock::new(|| Arc::from([TopicPattern::new("*")]));
        Grants {
            subscribe: ALL.clone(),
            publish: ALL.clone(),
            user: None,
            expires: None,
        }
    }

    /// These grants behind an `Arc`, the same one for every connection that holds
    /// [`Grants::all`] (a connection without a token keeps 8 bytes for them, not 64).
    pub(crate) fn into_shared(self) -> Arc<Grants> {
        static ALL: std::sync::LazyLock<Arc<Grants>> =
            std::sync::LazyLock::new(|| Arc::new(Grants::all()));
        if self == **ALL {
            ALL.clone()
        } else {
            Arc::new(self)
        }
    }

    /// Grants from pattern lists.
    pub fn new(subscribe: &[&str], publish: &[&str]) -> Grants {
        Grants {
            subscribe: subscribe.iter().map(|p| TopicPattern::new(p)).collect(),
            publish: publish.iter().map(|p| TopicPattern::new(p)).collect(),
            user: None,
            expires: None,
        }
    }

    /// The same grants for `user`.
    pub fn with_user(mut self, user: Option<Arc<str>>) -> Grants {
        self.user = user;
        self
    }

    /// The same grants, ending at `expires` (seconds since 1970).
    pub fn with_expiry(mut self, expires: Option<u64>) -> Grants {
        self.expires = expires;
        self
    }

    /// When the token expires (seconds since 1970), if it does.
    pub fn expires(&self) -> Option<u64> {
        self.expires
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
