//! The values of the `Sec-WebSocket-Extensions` header (RFC 6455 section 9.1): an extension
//! and its parameters. The handshake parses and formats them
//! ([`handshake::parse_extensions`](crate::handshake::parse_extensions),
//! [`handshake::format_extensions`](crate::handshake::format_extensions)) and permessage-deflate
//! negotiates with them; both use this module, neither uses the other for these types. Public
//! as `handshake::{ExtensionOffer, ExtensionParam}`.

/// One extension in a `Sec-WebSocket-Extensions` header, with its parameters in order.
///
/// ```
/// use fullduplex_proto::handshake::{ExtensionOffer, ExtensionParam};
///
/// let offer = ExtensionOffer::new("permessage-deflate")
///     .with_param(ExtensionParam::new("server_max_window_bits", Some("10")));
/// assert_eq!(offer.param("server_max_window_bits"), Some(Some("10")));
/// assert_eq!(offer.param("client_max_window_bits"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, such as `permessage-deflate`.
    pub name: String,
    /// The parameters, in the order they appeared.
    pub params: Vec<ExtensionParam>,
}

/// One `name[=value]` parameter of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// The parameter token.
    pub name: String,
    /// The value, unquoted; `None` for a bare parameter.
    pub value: Option<String>,
}

impl ExtensionOffer {
    /// An extension without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// This extension with `param` appended.
    pub fn with_param(mut self, param: ExtensionParam) -> Self {
        self.params.push(param);
        self
    }

    /// The first parameter called `name` (ignoring ASCII case): `None` when absent,
    /// `Some(None)` when present without a value, `Some(Some(value))` otherwise.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_deref())
    }
}

impl ExtensionParam {
    /// A parameter with an optional value.
    pub fn new(name: impl Into<String>, value: Option<&str>) -> Self {
        Self {
            name: name.into(),
            value: value.map(str::to_owned),
        }
    }
}
