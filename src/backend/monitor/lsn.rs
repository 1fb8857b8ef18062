//! `Lsn`: a position in the write-ahead log, as PostgreSQL prints it (`16/B374D848`).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use tokio_postgres::types::PgLsn;

/// A WAL position. `Lsn(0)` means "unknown" or "no position" (PostgreSQL never reports 0/0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// No position: a read floor that every replica meets; an LSN not polled yet.
    pub const ZERO: Lsn = Lsn(0);

    /// Bytes of WAL from `earlier` up to `self`; 0 if `earlier` is not earlier.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LsnError {
    #[error(
        "invalid LSN {0:?}: expected two hexadecimal numbers of up to 8 digits, like 16/B374D848"
    )]
    Invalid(String),
}

impl FromStr for Lsn {
    type Err = LsnError;

    fn from_str(text: &str) -> Result<Lsn, LsnError> {
        let invalid = || LsnError::Invalid(text.chars().take(40).collect());
        let (high, low) = text.split_once('/').ok_or_else(invalid)?;
        let half = |part: &str| {
            let is_hex =
                (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
            match is_hex {
                true => u64::from_str_radix(part, 16).map_err(|_| invalid()),
                false => Err(invalid()),
            }
        };
        Ok(Lsn((half(high)? << 32) | half(low)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl From<PgLsn> for Lsn {
    fn from(lsn: PgLsn) -> Lsn {
        Lsn(u64::from(lsn))
    }
}

impl From<Lsn> for PgLsn {
    fn from(lsn: Lsn) -> PgLsn {
        PgLsn::from(lsn.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let cases = [
            ("0/0", 0),
            ("0/1", 1),
            ("16/B374D848", 0x16_B374_D848),
            ("16/b374d848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
            ("1/0", 1 << 32),
        ];
        for (text, value) in cases {
            assert_eq!(text.parse::<Lsn>(), Ok(Lsn(value)), "{text}");
            assert_eq!(Lsn(value).to_string(), text.to_uppercase(), "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "/",
            "16",
            "16/",
            "/B3",
            "1/2/3",
            "g/0",
            "+1/0",
            "123456789/0",
            "0/ 1",
        ] {
            assert!(text.parse::<Lsn>().is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn orders_by_position() {
        let mut lsns: Vec<Lsn> = ["1/0", "0/FFFFFFFF", "0/10", "2/1"]
            .iter()
            .map(|t| t.parse().expect("valid"))
            .collect();
        lsns.sort();
        let texts: Vec<String> = lsns.iter().map(Lsn::to_string).collect();
        assert_eq!(texts, ["0/10", "0/FFFFFFFF", "1/0", "2/1"]);
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
    }

    #[test]
    fn converts_from_pg_lsn() {
        let pg: PgLsn = "16/B374D848".parse().expect("valid");
        assert_eq!(Lsn::from(pg), Lsn(0x16_B374_D848));
        assert_eq!(PgLsn::from(Lsn(7)), PgLsn::from(7));
    }
}
