//! Which end of the connection this is.

/// Which end of the connection this is. Servers require masked frames and send unmasked ones;
/// clients the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the HTTP upgrade request.
    Client,
    /// The end that accepted it.
    Server,
}
