//! Instants as whole milliseconds since the Unix epoch: exact, ordered, and portable across
//! SQLite and PostgreSQL. Rendered as RFC 3339 for people and for the API.

use std::fmt;

use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Reads the system clock. Kept here so that the rest of the domain takes time as input.
    pub fn now() -> Self {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self(i64::try_from(nanos / 1_000_000).expect("the clock is within i64 milliseconds"))
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Monday 00:00 UTC of this instant's week: when weekly limits reset.
    pub fn week_start(self) -> Timestamp {
        const DAY: i64 = 86_400_000;
        let days = self.0.div_euclid(DAY);
        // 1970-01-01 was a Thursday: three days after a Monday.
        let since_monday = (days + 3).rem_euclid(7);
        Timestamp((days - since_monday) * DAY)
    }

    /// The next Monday 00:00 UTC.
    pub fn next_week_start(self) -> Timestamp {
        Timestamp(self.week_start().0 + 7 * 86_400_000)
    }

    /// Always three fraction digits, so that rendered instants sort as text the way they
    /// sort in time (clients and people compare them as strings).
    pub fn to_rfc3339(self) -> String {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(at) => at.format(FORMAT).unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let at = time::OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_midnight_utc() {
        let parse = |text: &str| serde_json::from_str::<Timestamp>(&format!("\"{text}\"")).unwrap();
        // 2026-11-29 is a Sunday.
        assert_eq!(
            parse("2026-11-29T17:36:00Z").week_start(),
            parse("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            parse("2026-11-23T00:00:00Z").week_start(),
            parse("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            parse("2026-11-29T23:59:59.999Z").next_week_start(),
            parse("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            parse("1970-01-01T12:00:00Z").week_start(),
            parse("1969-12-29T00:00:00Z")
        );
    }

    #[test]
    fn renders_rfc3339_with_milliseconds_and_reads_it_back() {
        let at = Timestamp::from_unix_millis(1_700_000_000_123);
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }

    #[test]
    fn rendered_instants_sort_as_text_like_in_time() {
        let instants: Vec<Timestamp> = [1_700_000_000_600, 1_700_000_000_601, 1_700_000_001_000]
            .into_iter()
            .map(Timestamp::from_unix_millis)
            .collect();
        let rendered: Vec<String> = instants.iter().map(|at| at.to_rfc3339()).collect();
        assert_eq!(rendered[0], "2023-11-14T22:13:20.600Z");
        assert_eq!(rendered[2], "2023-11-14T22:13:21.000Z");
        let mut sorted = rendered.clone();
        sorted.sort();
        assert_eq!(rendered, sorted);
    }
}
