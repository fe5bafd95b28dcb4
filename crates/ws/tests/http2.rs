//! WebSockets over HTTP/2 (RFC 8441).
