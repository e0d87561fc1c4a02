//! The two timestamp forms of the Lambda API.

use time::OffsetDateTime;
use time::macros::format_description;

/// `LastModified` of a function or alias: `2024-01-01T00:00:00.000+0000`.
pub fn lambda_timestamp(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("a UTC timestamp always formats")
}

/// An ISO 8601 UTC timestamp with milliseconds: `2024-01-01T00:00:00.000Z` (invocation records).
pub fn iso_timestamp(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("a UTC timestamp always formats")
}

/// The current time, as every layer should read it.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_utc_offset() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(lambda_timestamp(at), "2023-11-14T22:13:20.123+0000");
        assert_eq!(iso_timestamp(at), "2023-11-14T22:13:20.123Z");
    }
}
