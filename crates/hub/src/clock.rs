//! The clock topic: the server publishes the time to it every interval (the demo page's live
//! clock).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::topic::Topic;
use crate::Hub;

/// The topic the clock publishes to.
pub const CLOCK_TOPIC: &str = "clock";

/// `{"time":"<RFC 3339, UTC, milliseconds>","unix_ms":N}` for `now`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
/// assert_eq!(
///     fullduplex_hub::clock::clock_message(at),
///     r#"{"time":"2023-11-14T22:13:20.123Z","unix_ms":1700000000123}"#
/// );
/// ```
pub fn clock_message(now: SystemTime) -> String {
    let unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let time = humantime::format_rfc3339_millis(now);
    format!(r#"{{"time":"{time}","unix_ms":{unix_ms}}}"#)
}

/// Publishes [`clock_message`] to [`CLOCK_TOPIC`] every `interval` until the hub shuts down.
///
/// # Cancel safety
///
/// Cancel safe: it only publishes, one message per tick.
pub async fn run(hub: Arc<Hub>, interval: Duration) {
    let Ok(topic) = Topic::new(CLOCK_TOPIC) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = hub.shutdown_token().cancelled() => return,
            _ = ticks.tick() => {
                let message = clock_message(SystemTime::now());
                if let Err(error) = hub.publish(&topic, &message).await {
                    tracing::warn!(%error, "clock: cannot publish");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |ms: u64| clock_message(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(
            at(951_868_799_999),
            r#"{"time":"2000-02-29T23:59:59.999Z","unix_ms":951868799999}"#
        );
        assert_eq!(
            at(4_107_542_400_000),
            r#"{"time":"2100-03-01T00:00:00.000Z","unix_ms":4107542400000}"#
        );
    }

    #[test]
    fn message_is_json() {
        let value: serde_json::Value =
            serde_json::from_str(&clock_message(SystemTime::now())).unwrap_or_default();
        assert!(value["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(value["unix_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000));
    }
}
