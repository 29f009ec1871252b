//! [`Period`]: a length of time as ISO 8601 writes it (`PT30S`, `PT8H`, `P2D`, `P1DT12H`).
//!
//! Only the designators of a fixed length are read: weeks, days, hours, minutes and whole
//! seconds. Years and months have no fixed length (a "month" from January 31st is not one from
//! February 1st), so a deadline written with them is refused rather than guessed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time in whole seconds, read from and written as an ISO 8601 duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    seconds: u64,
}

/// Why a text is not a [`Period`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ISO 8601 duration such as \"PT8H\" or \"P2D\": {1}")]
pub struct PeriodError(String, &'static str);

/// The longest period read: a hundred years of days, far beyond any deadline, short enough that
/// adding it to a timestamp never overflows.
const MAX_SECONDS: u64 = 100 * 366 * 86_400;

impl Period {
    /// A period of `seconds` seconds.
    pub const fn from_secs(seconds: u64) -> Self {
        Self { seconds }
    }

    /// Its length in seconds.
    pub const fn as_secs(self) -> u64 {
        self.seconds
    }

    /// Its length as a `std` duration.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }

    /// Its length as a `chrono` duration, to add to a timestamp.
    pub fn to_chrono(self) -> chrono::Duration {
        // MAX_SECONDS fits an i64 of seconds; a larger value is never built by `parse`.
        chrono::Duration::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX / 1_000))
    }

    /// Reads `PnW` or `PnDTnHnMnS` (each part optional, at least one present, in that order).
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let fail = |why| PeriodError(text.to_owned(), why);
        let rest = text
            .strip_prefix('P')
            .ok_or_else(|| fail("it must start with P"))?;
        let (date, time) = match rest.split_once('T') {
            Some((_, "")) => return Err(fail("a T must be followed by hours, minutes or seconds")),
            Some((date, time)) => (date, Some(time)),
            None => (rest, None),
        };
        if date.is_empty() && time.is_none() {
            return Err(fail("it names no length"));
        }
        let mut seconds = 0_u64;
        // Designators in the order ISO 8601 requires them, each with its length in seconds.
        let date_units: &[(char, u64)] = &[('W', 7 * 86_400), ('D', 86_400)];
        let time_units: &[(char, u64)] = &[('H', 3_600), ('M', 60), ('S', 1)];
        for (part, units) in [(date, date_units), (time.unwrap_or(""), time_units)] {
            let mut unit = 0;
            let mut digits = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() {
                    digits.push(c);
                    continue;
                }
                if c == 'Y' || (c == 'M' && units.len() == 2) {
                    return Err(fail("years and months have no fixed length; use days"));
                }
                if matches!(c, '.' | ',') {
                    return Err(fail("only whole numbers are read"));
                }
                let Some(offset) = units[unit..].iter().position(|(u, _)| *u == c) else {
                    return Err(fail(
                        "its designators must be W, or D, H, M, S in that order",
                    ));
                };
                if digits.is_empty() {
                    return Err(fail("a number must come before each designator"));
                }
                let n: u64 = digits.parse().map_err(|_| fail("a number is too large"))?;
                let (_, length) = units[unit + offset];
                seconds = n
                    .checked_mul(length)
                    .and_then(|s| s.checked_add(seconds))
                    .filter(|s| *s <= MAX_SECONDS)
                    .ok_or_else(|| fail("it is longer than a hundred years"))?;
                unit += offset + 1;
                digits.clear();
            }
            if !digits.is_empty() {
                return Err(fail("a number must be followed by its designator"));
            }
        }
        if date.contains('W')
            && (date.len() > date.find('W').map_or(0, |i| i + 1) || time.is_some())
        {
            return Err(fail("weeks cannot be combined with other parts"));
        }
        Ok(Self { seconds })
    }
}

impl fmt::Display for Period {
    /// The shortest ISO 8601 form in days, hours, minutes and seconds (`P1DT2H`, `PT0S`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, rest) = (self.seconds / 86_400, self.seconds % 86_400);
        let (hours, minutes, seconds) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
        f.write_str("P")?;
        if days > 0 {
            write!(f, "{days}D")?;
        }
        if rest > 0 || days == 0 {
            f.write_str("T")?;
            if hours > 0 {
                write!(f, "{hours}H")?;
            }
            if minutes > 0 {
                write!(f, "{minutes}M")?;
            }
            if seconds > 0 || rest == 0 {
                write!(f, "{seconds}S")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Option<u64> {
        Period::parse(text).ok().map(Period::as_secs)
    }

    #[test]
    fn the_fixed_length_designators_are_read() {
        assert_eq!(secs("PT30S"), Some(30));
        assert_eq!(secs("PT8H"), Some(8 * 3_600));
        assert_eq!(secs("P2D"), Some(2 * 86_400));
        assert_eq!(secs("P1DT12H"), Some(86_400 + 12 * 3_600));
        assert_eq!(secs("PT1H30M5S"), Some(3_600 + 30 * 60 + 5));
        assert_eq!(secs("PT90M"), Some(90 * 60));
        assert_eq!(secs("P1W"), Some(7 * 86_400));
        assert_eq!(secs("PT0S"), Some(0));
        assert_eq!(secs("PT0010S"), Some(10));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for bad in [
            "",
            "P",
            "PT",
            "8H",
            "pt8h",
            "PT8",
            "PTH",
            "P1Y",
            "P1M",
            "P1DT",
            "PT1.5S",
            "PT1,5S",
            "PT5S1M",
            "P1D2D",
            "P1W2D",
            "P1WT1H",
            "PT-1S",
            "P1DT1D",
            "P 1D",
            "PT1H ",
            "P1H",
            "PT1W",
            "P99999999999999999999D",
            "P40000D",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad:?} was read");
        }
        let error = Period::parse("P1M")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("months"), "{error}");
    }

    #[test]
    fn a_period_is_written_in_its_shortest_form_and_read_back() {
        for (text, written) in [
            ("PT30S", "PT30S"),
            ("PT90M", "PT1H30M"),
            ("P1W", "P7D"),
            ("P1DT0H", "P1D"),
            ("PT0S", "PT0S"),
            ("P2DT3H4M5S", "P2DT3H4M5S"),
        ] {
            let period = Period::parse(text).unwrap_or_default();
            assert_eq!(period.to_string(), written);
            assert_eq!(Period::parse(written).ok(), Some(period));
        }
        let json = serde_json::to_string(&Period::from_secs(3_600)).unwrap_or_default();
        assert_eq!(json, "\"PT1H\"");
        assert_eq!(
            serde_json::from_str::<Period>("\"PT1H\"").ok(),
            Some(Period::from_secs(3_600))
        );
        assert!(serde_json::from_str::<Period>("\"P1M\"").is_err());
    }
}
