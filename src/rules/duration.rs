//! Durations as the rules write them: an unsigned integer and a unit, `250ms`, `5s`, `10m`, `1h`.
//! No fractions, signs, spaces or compound forms, so every value reads one way.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration {0:?}: expected an integer followed by a unit \
         (ms, s, m or h), e.g. \"250ms\", \"5s\", \"10m\", \"1h\""
    )]
    Malformed(String),
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses `"<digits><unit>"` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(malformed)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(malformed());
    }
    let seconds_per_unit = match unit {
        "ms" => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        _ => return Err(malformed()),
    };
    let too_large = || DurationError::TooLarge(text.to_owned());
    let amount: u64 = digits.parse().map_err(|_| too_large())?;
    match seconds_per_unit {
        None => Ok(Duration::from_millis(amount)),
        Some(factor) => amount
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("0ms", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejected() {
        let malformed = [
            "", "5", "s", "1.5s", "-1s", "+1s", "5 s", " 5s", "5sec", "5S", "1d", "1h30m", "5µs",
        ];
        for text in malformed {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Malformed(text.into())),
                "{text}"
            );
        }
        let huge = "99999999999999999999s";
        assert_eq!(
            parse_duration(huge),
            Err(DurationError::TooLarge(huge.into()))
        );
        let overflow = format!("{}h", u64::MAX / 60);
        assert_eq!(
            parse_duration(&overflow),
            Err(DurationError::TooLarge(overflow.clone()))
        );
    }

    #[test]
    fn message() {
        let err = parse_duration("5x").map(|_| ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid duration \"5x\": expected an integer followed by a unit \
             (ms, s, m or h), e.g. \"250ms\", \"5s\", \"10m\", \"1h\""
        );
    }
}
