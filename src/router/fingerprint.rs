//! Statement fingerprints: one lexer pass turns SQL into a normalized text (literals as `?`,
//! words lower-case, comments dropped, canonical spacing) and a 128-bit hash of that text.

use crate::sql::lex::{Lexer, Token};

/// A statement's identity, literals aside: the parse-cache key and the text rules search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// FNV-1a (128 bits) of `normalized`.
    pub hash: u128,
    pub normalized: String,
}

/// Characters that make up operators: adjacent ones form one operator (`<=`, `::`, `->>`).
const OPERATOR_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?:";

/// What the last piece written was, for spacing and operator merging.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Piece {
    Name,
    Operator,
    /// `(`, `[` or `.`: nothing follows with a space.
    Opener,
    Other,
}

/// Fingerprints `sql` (one or more statements) without parsing it.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
    let mut out: Vec<u8> = Vec::with_capacity(sql.len());
    let mut last: Option<(Piece, usize)> = None;
    let mut lexer = Lexer::new(sql);
    while let Some((token, span)) = lexer.next_spanned() {
        let adjacent = last.is_some_and(|(_, end)| end == span.start);
        let piece = match token {
            Token::Symbol(c) if OPERATOR_CHARS.contains(&c) => {
                let merge = adjacent && last.is_some_and(|(p, _)| p == Piece::Operator);
                if !merge {
                    space(&mut out, last, c == b':');
                }
                out.push(c);
                Piece::Operator
            }
            Token::Symbol(c) => {
                let tight = matches!(c, b')' | b']' | b',' | b'.')
                    || matches!(c, b'(' | b'[')
                        && adjacent
                        && last.is_some_and(|(p, _)| p == Piece::Name);
                space(&mut out, last, tight);
                out.push(c);
                if matches!(c, b'(' | b'[' | b'.') {
                    Piece::Opener
                } else {
                    Piece::Other
                }
            }
            Token::Word(w) => {
                space(&mut out, last, false);
                out.extend(w.iter().map(u8::to_ascii_lowercase));
                Piece::Name
            }
            Token::QuotedIdent(_) | Token::Param(_) => {
                space(&mut out, last, false);
                out.extend_from_slice(&sql[span.clone()]);
                Piece::Name
            }
            Token::Str(_) | Token::Literal => {
                space(&mut out, last, false);
                out.push(b'?');
                Piece::Other
            }
            Token::Semicolon => {
                space(&mut out, last, true);
                out.push(b';');
                Piece::Other
            }
        };
        last = Some((piece, span.end));
    }
    // A trailing `;` changes nothing the server does.
    while out.last().is_some_and(|&c| c == b';' || c == b' ') {
        out.pop();
    }
    let normalized = match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Fingerprint {
        hash: fnv1a_128(normalized.as_bytes()),
        normalized,
    }
}

/// Writes the space between two pieces unless the next one is `tight` or the last opens.
fn space(out: &mut Vec<u8>, last: Option<(Piece, usize)>, tight: bool) {
    match last {
        None => {}
        Some((Piece::Opener, _)) => {}
        // `::` casts bind tightly on both sides.
        Some((Piece::Operator, _)) if out.ends_with(b"::") => {}
        Some(_) if tight => {}
        Some(_) => out.push(b' '),
    }
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
                "select abalance from pgbench_accounts where aid = ?",
            ),
            (
                "  select /* c */ a,b from S.T -- tail\n where x='y' and z = E'\\'' ;",
                "select a, b from s.t where x = ? and z = ?",
            ),
            ("select $1, $2::int", "select $1, $2::int"),
            ("select a :: text", "select a::text"),
            ("select count(*) from t", "select count(*) from t"),
            (
                "select * from t where x in (1, 2)",
                "select * from t where x in (?, ?)",
            ),
            (
                "select \"Mixed\"\"Q\" from t",
                "select \"Mixed\"\"Q\" from t",
            ),
            (
                "select $$a$$, $x$b$x$, b'01', x'ff', 1.5e-3",
                "select ?, ?, ?, ?, ?",
            ),
            ("select a<=b, a->>'k'", "select a <= b, a ->> ?"),
            ("select a< =b", "select a < = b"),
            ("select arr[1], t.*", "select arr[?], t.*"),
            ("begin; select 1; commit;", "begin; select ?; commit"),
            ("", ""),
        ];
        for (sql, want) in cases {
            assert_eq!(fingerprint(sql.as_bytes()).normalized, *want, "{sql}");
        }
    }

    #[test]
    fn literals_do_not_change_the_hash() {
        let same: &[(&str, &str)] = &[
            ("select * from t where a = 1", "SELECT *  FROM t WHERE a=2"),
            ("select 'x'", "select $q$y$q$"),
            ("select E'a\\'b', -1.5", "select 'c', -7"),
            ("select x'0f'", "select b'1'"),
            ("select 1 /* a */", "-- b\nselect 2"),
            ("select a from t;", "select a from t"),
        ];
        for (a, b) in same {
            assert_eq!(
                fingerprint(a.as_bytes()),
                fingerprint(b.as_bytes()),
                "{a} / {b}"
            );
        }
        let different: &[(&str, &str)] = &[
            ("select a from t", "select b from t"),
            ("select a from t", "select a from \"t\""),
            ("select \"A\" from t", "select \"a\" from t"),
            ("select a < 1", "select a > 1"),
            ("select a <= 1", "select a < = 1"),
            ("select $1", "select $2"),
            ("select a.b", "select ab"),
            ("select 1; select 2", "select 1, 2"),
        ];
        for (a, b) in different {
            assert_ne!(
                fingerprint(a.as_bytes()).hash,
                fingerprint(b.as_bytes()).hash,
                "{a} / {b}"
            );
        }
    }
}
