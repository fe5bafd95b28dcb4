//! Reading an HTTP head (request or response) during the opening handshake.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads the next piece of an HTTP head into `buf`, never past `max_head + 1` bytes in total:
/// one byte beyond the limit is enough for the parser to tell that the head is too large, and
/// the bytes after a complete head (the first WebSocket frames) stay in `buf`.
///
/// End of stream before the head is complete is an `UnexpectedEof` error naming `who` closed.
pub(crate) async fn read_head_piece<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
    who: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + Unpin,
{
    let room = (max_head + 1).saturating_sub(buf.len()).clamp(1, 4096);
    buf.reserve(room);
    let n = stream.take(room as u64).read_buf(buf).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{who} closed the connection during the opening handshake"),
        ));
    }
    Ok(())
}
