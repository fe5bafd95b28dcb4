//! Proxy URLs, as curl's `--proxy` and `*_proxy` variables spell them.

use super::{is_reg_name_byte, Tunnel, TunnelError, TunnelKind};

/// The port used when a proxy URL names none (curl's default, for every proxy scheme).
pub const DEFAULT_PORT: u16 = 1080;

/// Parses a proxy URL (see [`Tunnel::parse`]).
pub(super) fn parse(url: &str) -> Result<Tunnel, TunnelError> {
    let url = url.trim();
    let invalid = |why: &str| TunnelError::InvalidUrl(format!("{why} in {:?}", redact(url)));
    let (kind, rest) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let kind = match scheme.to_ascii_lowercase().as_str() {
                "http" => TunnelKind::Http,
                "socks5" | "socks5h" => TunnelKind::Socks5,
                _ => return Err(TunnelError::UnsupportedScheme(scheme.to_owned())),
            };
            (kind, rest)
        }
        None => (TunnelKind::Http, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if !(path.is_empty() || path == "/") {
        return Err(invalid("a path"));
    }
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(userinfo) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let user = percent_decode(user).ok_or_else(|| invalid("bad percent-encoding"))?;
            let password =
                percent_decode(password).ok_or_else(|| invalid("bad percent-encoding"))?;
            Some((user, password))
        }
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("an unclosed '['"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("a bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("junk after ']'"))?,
            ),
        };
        (ip, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if !host.contains(':') && !host.bytes().all(is_reg_name_byte) {
        return Err(invalid("a bad host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(invalid("a bad port")),
        },
    };
    let tunnel = Tunnel::new(kind, host.to_owned(), port);
    Ok(match credentials {
        Some((user, password)) => tunnel.with_credentials(user, password),
        None => tunnel,
    })
}

/// The URL with anything between `://` and `@` (the credentials) replaced, for error messages.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("p%40ss%3Aw%25rd").as_deref(),
            Some("p@ss:w%rd")
        );
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn redaction_hides_credentials() {
        assert_eq!(redact("http://u:secret@h:1/x"), "http://***@h:1/x");
        assert_eq!(redact("u:secret@h"), "***@h");
        assert_eq!(redact("http://h:1"), "http://h:1");
    }
}
