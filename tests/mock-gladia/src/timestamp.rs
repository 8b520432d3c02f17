//! ISO-8601 timestamps (`2023-12-28T09:04:17.210Z`) as Gladia writes them in `created_at` and
//! `timestamp` fields. Hand-rolled so the mock needs no date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `time` as UTC ISO-8601 with millisecond precision and a `Z` suffix.
pub fn iso8601(time: SystemTime) -> String {
    // A clock before 1970 is not a case worth an error path in a test mock: clamp to the epoch.
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60
    )
}

/// The current time, formatted by [`iso8601`].
pub fn now_iso8601() -> String {
    iso8601(SystemTime::now())
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are small by construction (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2023-12-28T09:04:17.210Z, the example of the Gladia docs.
        let t = UNIX_EPOCH + Duration::from_millis(1_703_754_257_210);
        assert_eq!(iso8601(t), "2023-12-28T09:04:17.210Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(iso8601(t), "2024-02-29T00:00:00.000Z");
    }
}
