//! Backend hooks: the hub asks a backend over HTTP whether to allow a connection
//! (`--connect-hook URL`) or a subscription (`--subscribe-hook URL`).
//!
//! The request is a `POST` with a JSON body (see PROTOCOL.md, "Backend hooks"); the answer
//! must be `2xx` with `{"allow":true}` (optionally `user`, `subscribe` and `publish` for a
//! connection, which then replace the token's) to allow. Anything else denies: `"allow":
//! false`, another status, a body that is not that JSON, no answer within the timeout, a
//! backend that cannot be reached. The answer is bounded to [`MAX_ANSWER_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::Grants;
use crate::fetch;

/// Largest hook answer.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Where the hooks are and how long they may take.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// Asked before a WebSocket is accepted.
    pub connect: Option<String>,
    /// Asked before a subscription is made.
    pub subscribe: Option<String>,
    /// How long a hook may take; past it the request is denied.
    pub timeout: Duration,
}

impl Default for HookConfig {
    fn default() -> HookConfig {
        HookConfig {
            connect: None,
            subscribe: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What the connect hook is told.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    /// `"connect"`.
    pub event: &'static str,
    /// The token's user, if any.
    pub user: Option<&'a str>,
    /// The request's path.
    pub path: &'a str,
    /// The request's query, if any.
    pub query: Option<&'a str>,
    /// The request's headers (cookies included), names in lower case.
    pub headers: &'a serde_json::Map<String, serde_json::Value>,
}

/// What the subscribe hook is told.
#[derive(Debug, Serialize)]
pub struct SubscribeRequest<'a> {
    /// `"subscribe"`.
    pub event: &'static str,
    /// The connection's id.
    pub client: &'a str,
    /// The connection's user, if any.
    pub user: Option<&'a str>,
    /// The topic.
    pub topic: &'a str,
    /// The headers of the connection's upgrade request.
    pub headers: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
}

/// Why a hook denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookDenied {
    /// The backend answered `"allow":false`.
    #[error("denied by the backend{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Denied {
        /// The backend's reason, if it gave one.
        reason: Option<String>,
    },
    /// The backend failed (status, body, timeout, unreachable): denied by policy.
    #[error("the backend hook failed ({0}): denied")]
    Failed(String),
}

/// The hooks of a hub.
#[derive(Debug, Clone)]
pub struct Hooks {
    config: HookConfig,
}

impl Hooks {
    /// Hooks for `config`.
    pub fn new(config: HookConfig) -> Hooks {
        Hooks { config }
    }

    /// Whether the connect hook is configured.
    pub fn has_connect_hook(&self) -> bool {
        self.config.connect.is_some()
    }

    /// Whether the subscribe hook is configured (the connection then keeps its headers).
    pub fn has_subscribe_hook(&self) -> bool {
        self.config.subscribe.is_some()
    }

    /// Asks the connect hook, if any; returns the grants to use (`grants`, or the ones the
    /// backend gave).
    ///
    /// # Errors
    /// [`HookDenied`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn connect(
        &self,
        request: &ConnectRequest<'_>,
        grants: Grants,
    ) -> Result<Grants, HookDenied> {
        let Some(url) = &self.config.connect else {
            return Ok(grants);
        };
        let answer = self.ask(url, request).await?;
        let user = answer
            .user
            .map(Arc::from)
            .or_else(|| grants.user().cloned());
        let expires = grants.expires();
        let grants = match (answer.subscribe, answer.publish) {
            (None, None) => grants,
            (subscribe, publish) => {
                let subscribe = subscribe.unwrap_or_default();
                let publish = publish.unwrap_or_default();
                let subscribe: Vec<&str> = subscribe.iter().map(String::as_str).collect();
                let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
                Grants::new(&subscribe, &publish).with_expiry(expires)
            }
        };
        Ok(grants.with_user(user))
    }

    /// Asks the subscribe hook, if any.
    ///
    /// # Errors
    /// [`HookDenied`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn subscribe(&self, request: &SubscribeRequest<'_>) -> Result<(), HookDenied> {
        match &self.config.subscribe {
            None => Ok(()),
            Some(url) => self.ask(url, request).await.map(|_| ()),
        }
    }

    async fn ask(&self, url: &str, request: &impl Serialize) -> Result<Answer, HookDenied> {
        let body = serde_json::to_vec(request).map_err(|e| HookDenied::Failed(e.to_string()))?;
        let answer = fetch::request(
            http::Method::POST,
            url,
            &[("content-type", "application/json")],
            Bytes::from(body),
            MAX_ANSWER_BYTES,
            self.config.timeout,
        )
        .await
        .map_err(|e| HookDenied::Failed(e.to_string()))?;
        if !answer.status.is_success() {
            return Err(HookDenied::Failed(format!("status {}", answer.status)));
        }
        let answer: Answer = serde_json::from_slice(&answer.body)
            .map_err(|e| HookDenied::Failed(format!("answer: {e}")))?;
        if !answer.allow {
            return Err(HookDenied::Denied {
                reason: answer.reason,
            });
        }
        Ok(answer)
    }
}

/// The headers of a request as a JSON object (lower-case names; repeated headers joined
/// with `, `; values that are not UTF-8 left out).
pub fn headers_json(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    map
}
