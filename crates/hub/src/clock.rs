//! The clock topic: the server publishes the time to it every interval (the demo page's live
//! clock), and RFC 3339 formatting without a date library.

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
    format!(
        r#"{{"time":"{}","unix_ms":{unix_ms}}}"#,
        rfc3339_millis(unix_ms)
    )
}

/// Formats milliseconds since 1970 as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01, by 400-year eras (146,097
/// days each) counted from 0000-03-01, so that the leap day ends each year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Publishes [`clock_message`] to [`CLOCK_TOPIC`] every `interval` until the hub shuts down.
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
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_709_164_800_000),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_735_689_599_000),
            "2024-12-31T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(253_402_300_799_000),
            "9999-12-31T23:59:59.000Z"
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
