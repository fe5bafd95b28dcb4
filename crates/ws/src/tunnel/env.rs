//! The environment's proxy variables (`https_proxy`, `http_proxy`, `all_proxy`,
//! `no_proxy`), read the way curl reads them.

use std::net::IpAddr;

use super::{strip_brackets, Tunnel, TunnelError};

/// The proxy variables of an environment, and curl's rules for choosing among them.
///
/// [`TunnelEnv::from_lookup`] takes the variables from any function, so the decision can be
/// tested without changing the process environment:
///
/// ```
/// use std::collections::HashMap;
/// use fullduplex::tunnel::{TunnelEnv, TunnelKind};
/// let vars = HashMap::from([
///     ("HTTPS_PROXY", "http://proxy.corp:3128"),
///     ("HTTP_PROXY", "http://ignored:1"), // only lower-case http_proxy counts
///     ("ALL_PROXY", "socks5://socks.corp"),
///     ("NO_PROXY", "localhost, .internal.corp"),
/// ]);
/// let env = TunnelEnv::from_lookup(|name| vars.get(name).map(|v| v.to_string()));
/// let for_wss = env.proxy_for("example.com", true).unwrap().unwrap();
/// assert_eq!(for_wss.host(), "proxy.corp");
/// let for_ws = env.proxy_for("example.com", false).unwrap().unwrap();
/// assert_eq!(for_ws.kind(), TunnelKind::Socks5);
/// assert_eq!(env.proxy_for("chat.internal.corp", true).unwrap(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelEnv {
    /// `https_proxy`, else `HTTPS_PROXY`: the proxy for `wss://` targets.
    pub https_proxy: Option<String>,
    /// `http_proxy` (never `HTTP_PROXY`): the proxy for `ws://` targets.
    pub http_proxy: Option<String>,
    /// `all_proxy`, else `ALL_PROXY`: the proxy when the scheme's own variable is unset.
    pub all_proxy: Option<String>,
    /// `no_proxy`, else `NO_PROXY`: hosts to reach directly; see [`no_proxy_matches`].
    pub no_proxy: Option<String>,
}

impl TunnelEnv {
    /// Reads the process environment. Values that are not UTF-8 count as unset.
    pub fn from_env() -> TunnelEnv {
        TunnelEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (name to value). Lower-case names are asked first;
    /// empty (or blank) values count as unset.
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> TunnelEnv {
        let mut first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| lookup(name).filter(|value| !value.trim().is_empty()))
        };
        TunnelEnv {
            https_proxy: first(&["https_proxy", "HTTPS_PROXY"]),
            http_proxy: first(&["http_proxy"]),
            all_proxy: first(&["all_proxy", "ALL_PROXY"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The proxy for a target (host name or IP literal, IPv6 with or without brackets), or
    /// `None` for a direct connection: the scheme's variable, else `all_proxy`, unless
    /// `no_proxy` matches the host. A proxy value that does not parse is an error (unless
    /// `no_proxy` exempts the host anyway).
    pub fn proxy_for(
        &self,
        target_host: &str,
        target_is_tls: bool,
    ) -> Result<Option<Tunnel>, TunnelError> {
        let scheme_proxy = match target_is_tls {
            true => self.https_proxy.as_deref(),
            false => self.http_proxy.as_deref(),
        };
        let Some(value) = scheme_proxy.or(self.all_proxy.as_deref()) else {
            return Ok(None);
        };
        if let Some(list) = &self.no_proxy {
            if no_proxy_matches(list, target_host) {
                return Ok(None);
            }
        }
        Tunnel::parse(value).map(Some)
    }
}

/// Whether a `no_proxy` list exempts `host` from the proxy, by curl's rules.
///
/// Entries are separated by commas (and/or white space). `*` alone exempts every host. An
/// IP literal entry matches that address exactly (IPv6 with or without brackets; CIDR ranges
/// are not supported). Any other entry, with an optional leading `.` (or `*.`), matches the
/// host name itself and every name below it, ignoring case: `example.com` and `.example.com`
/// both match `example.com` and `ws.example.com`, never `badexample.com`. Ports in entries
/// are not supported.
///
/// ```
/// use fullduplex::tunnel::no_proxy_matches;
/// assert!(no_proxy_matches("localhost,.example.com", "WS.Example.COM"));
/// assert!(no_proxy_matches("example.com", "example.com"));
/// assert!(!no_proxy_matches("example.com", "badexample.com"));
/// assert!(no_proxy_matches("10.0.0.1, [::1]", "::1"));
/// assert!(!no_proxy_matches("10.0.0.1", "10.0.0.10"));
/// assert!(no_proxy_matches("*", "anything"));
/// ```
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = strip_brackets(host.trim()).trim_end_matches('.');
    if host.is_empty() {
        return false;
    }
    let host_ip = host.parse::<IpAddr>().ok();
    let host = host.as_bytes();
    for entry in no_proxy.split(|c: char| c == ',' || c.is_whitespace()) {
        let entry = entry.trim();
        if entry == "*" {
            return true;
        }
        let entry = strip_brackets(entry);
        if let Some(ip) = host_ip {
            if entry.parse::<IpAddr>() == Ok(ip) {
                return true;
            }
            continue;
        }
        let entry = entry
            .strip_prefix("*.")
            .or_else(|| entry.strip_prefix('.'))
            .unwrap_or(entry)
            .trim_end_matches('.')
            .as_bytes();
        if entry.is_empty() {
            continue;
        }
        if host.eq_ignore_ascii_case(entry) {
            return true;
        }
        if host.len() > entry.len() {
            let (head, tail) = host.split_at(host.len() - entry.len());
            if head.ends_with(b".") && tail.eq_ignore_ascii_case(entry) {
                return true;
            }
        }
    }
    false
}
