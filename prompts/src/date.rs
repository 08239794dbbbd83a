//! Today's date in the two spellings Llama 3.1 prompts use, without a calendar dependency.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A calendar date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    /// Year, e.g. 2024.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
}

impl Date {
    /// Today in UTC.
    pub fn today() -> Date {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Date::from_days_since_epoch(secs.div_euclid(86_400))
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date { year, month, day }
    }

    /// `strftime("%d %b %Y")`, the official template's spelling: `26 Jul 2024`.
    pub fn short(self) -> String {
        let month = &MONTHS[self.month as usize - 1][..3];
        format!("{:02} {month} {}", self.day, self.year)
    }

    /// `strftime("%d %B %Y")`, Meta's reference spelling: `21 September 2024`.
    pub fn long(self) -> String {
        let month = MONTHS[self.month as usize - 1];
        format!("{:02} {month} {}", self.day, self.year)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let d = Date::from_days_since_epoch(0);
        assert_eq!((d.year, d.month, d.day), (1970, 1, 1));
        // 2024-07-26 is day 19930.
        assert_eq!(Date::from_days_since_epoch(19_930).short(), "26 Jul 2024");
        // 2024-09-21 is day 19987; 2000-02-29 is day 11016.
        assert_eq!(
            Date::from_days_since_epoch(19_987).long(),
            "21 September 2024"
        );
        assert_eq!(
            Date::from_days_since_epoch(11_016).long(),
            "29 February 2000"
        );
        assert_eq!(Date::from_days_since_epoch(19_727).short(), "05 Jan 2024");
    }
}
