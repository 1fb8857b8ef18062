//! A single-pass SQL lexer over bytes: enough to find statement boundaries, keywords and
//! function names without a parse. Strings, quoted identifiers, dollar quotes and comments
//! are skipped correctly so that words inside them are never mistaken for SQL.

/// One token. Literals and operators carry no text: nothing here needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted word: keyword or identifier, as written.
    Word(&'a [u8]),
    /// A double-quoted identifier, without its quotes (doubled quotes left as they are).
    QuotedIdent(&'a [u8]),
    /// A plain '...' string, without its quotes (doubled quotes left as they are).
    Str(&'a [u8]),
    /// Any other string (E'', dollar-quoted, U&''), a number or a bit string.
    Literal,
    /// A positional parameter (`$1`), with its `$`.
    Param(&'a [u8]),
    /// `;`, ending a statement.
    Semicolon,
    /// Any other punctuation or operator character.
    Symbol(u8),
}

impl Token<'_> {
    /// Whether this is the unquoted word `keyword` (ASCII case-insensitive).
    pub fn is_word(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword.as_bytes()))
    }

    /// The name this token stands for, if it is a word or quoted identifier.
    pub fn name(&self) -> Option<&[u8]> {
        match self {
            Token::Word(w) | Token::QuotedIdent(w) => Some(w),
            _ => None,
        }
    }
}

use std::ops::Range;

/// Iterates over the tokens of `sql`.
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Lexer { sql, pos: 0 }
    }

    /// The next token with its byte range in the input.
    pub fn next_spanned(&mut self) -> Option<(Token<'a>, Range<usize>)> {
        self.skip_trivia();
        let start = self.pos;
        let token = self.token()?;
        Some((token, start..self.pos.min(self.sql.len())))
    }

    /// The body of the next comment if only whitespace comes before it (a leading
    /// comment), without its `--` or `/* */`; `None` at the first token.
    pub fn next_comment(&mut self) -> Option<&'a [u8]> {
        while self.peek(0).is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
        let start = self.pos;
        let (open, close) = match (self.peek(0), self.peek(1)) {
            (Some(b'-'), Some(b'-')) => (2, 0),
            (Some(b'/'), Some(b'*')) => (2, 2),
            _ => return None,
        };
        self.skip_comment();
        let end = if close > 0 && self.sql[start..self.pos].ends_with(b"*/") {
            self.pos - close
        } else {
            self.pos
        };
        self.sql.get(start + open..end.max(start + open))
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.sql.get(self.pos + offset).copied()
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) | (Some(b'/'), Some(b'*')) => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// Skips one comment (`--` to end of line, nested `/* */`) starting here.
    fn skip_comment(&mut self) {
        match (self.peek(0), self.peek(1)) {
            (Some(b'-'), Some(b'-')) => {
                while let Some(c) = self.peek(0) {
                    self.pos += 1;
                    if c == b'\n' {
                        break;
                    }
                }
            }
            (Some(b'/'), Some(b'*')) => {
                self.pos += 2;
                let mut depth = 1;
                while depth > 0 && self.pos < self.sql.len() {
                    match (self.peek(0), self.peek(1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            self.pos += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            self.pos += 2;
                        }
                        _ => self.pos += 1,
                    }
                }
            }
            _ => {}
        }
    }

    /// Skips a quoted run starting at the opening quote; a doubled quote is an escaped one.
    /// With `backslashes`, a backslash escapes the next byte (E'' strings).
    fn skip_quoted(&mut self, quote: u8, backslashes: bool) {
        self.pos += 1;
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            if backslashes && c == b'\\' {
                self.pos += 1;
            } else if c == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// At `$`: a dollar-quoted string (`$tag$ ... $tag$`) or a parameter (`$1`).
    fn skip_dollar(&mut self) -> Token<'a> {
        let start = self.pos;
        let mut end = start + 1;
        while let Some(&c) = self.sql.get(end) {
            if c == b'$' {
                let tag = &self.sql[start..=end];
                let body_start = end + 1;
                let close = find(&self.sql[body_start..], tag);
                self.pos = close.map_or(self.sql.len(), |at| body_start + at + tag.len());
                return Token::Literal;
            }
            if !(is_word_byte(c) && !c.is_ascii_digit() || end > start + 1 && c.is_ascii_digit()) {
                break;
            }
            end += 1;
        }
        // A parameter: `$` and digits.
        self.pos += 1;
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        Token::Param(&self.sql[start..self.pos])
    }

    /// A number: digits, `.`, an exponent with its sign, or what follows a `0x`.
    fn skip_number(&mut self) {
        while let Some(c) = self.peek(0) {
            let exponent_sign = matches!(c, b'+' | b'-')
                && matches!(
                    self.pos.checked_sub(1).map(|p| self.sql[p]),
                    Some(b'e' | b'E')
                )
                && self.peek(1).is_some_and(|n| n.is_ascii_digit());
            if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign) {
                return;
            }
            self.pos += 1;
        }
    }

    /// The token starting here (after trivia).
    fn token(&mut self) -> Option<Token<'a>> {
        let c = self.peek(0)?;
        let next = self.peek(1);
        let token = match c {
            b'\'' => {
                let start = self.pos + 1;
                self.skip_quoted(b'\'', false);
                let end = self.pos.saturating_sub(1).max(start);
                Token::Str(&self.sql[start..end])
            }
            b'"' => {
                let start = self.pos + 1;
                self.skip_quoted(b'"', false);
                let end = self.pos.saturating_sub(1).max(start);
                Token::QuotedIdent(&self.sql[start..end])
            }
            b'$' => self.skip_dollar(),
            b'e' | b'E' if next == Some(b'\'') => {
                self.pos += 1;
                self.skip_quoted(b'\'', true);
                Token::Literal
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                self.pos += 1;
                self.skip_quoted(b'\'', false);
                Token::Literal
            }
            b'u' | b'U' if next == Some(b'&') && self.peek(2) == Some(b'"') => {
                self.pos += 2;
                let start = self.pos + 1;
                self.skip_quoted(b'"', false);
                let end = self.pos.saturating_sub(1).max(start);
                Token::QuotedIdent(&self.sql[start..end])
            }
            b'u' | b'U' if next == Some(b'&') && self.peek(2) == Some(b'\'') => {
                self.pos += 2;
                self.skip_quoted(b'\'', false);
                Token::Literal
            }
            c if c.is_ascii_digit() || c == b'.' && next.is_some_and(|n| n.is_ascii_digit()) => {
                self.skip_number();
                Token::Literal
            }
            c if is_word_byte(c) => {
                let start = self.pos;
                while self.peek(0).is_some_and(|c| is_word_byte(c) || c == b'$') {
                    self.pos += 1;
                }
                Token::Word(&self.sql[start..self.pos])
            }
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            c => {
                self.pos += 1;
                Token::Symbol(c)
            }
        };
        Some(token)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.next_spanned().map(|(token, _)| token)
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        Lexer::new(sql.as_bytes())
            .map(|t| match t {
                Token::Word(w) => String::from_utf8_lossy(w).to_lowercase(),
                Token::QuotedIdent(w) => format!("\"{}\"", String::from_utf8_lossy(w)),
                Token::Literal | Token::Str(_) => "?".into(),
                Token::Param(p) => String::from_utf8_lossy(p).into_owned(),
                Token::Semicolon => ";".into(),
                Token::Symbol(c) => (c as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn skips_what_is_not_sql() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["select", "?"]),
            ("select 'set x = 1; listen y'", &["select", "?"]),
            (
                "select $$ create temp table t $$, $a$ $$ $a$",
                &["select", "?", ",", "?"],
            ),
            ("select E'it\\'s; listen x'", &["select", "?"]),
            (
                "select 'it''s' -- listen x\n, 2",
                &["select", "?", ",", "?"],
            ),
            ("/* listen /* nested */ x */ select", &["select"]),
            (
                "select \"Weird \"\"name\"\"\" from t",
                &["select", "\"Weird \"\"name\"\"\"", "from", "t"],
            ),
            (
                "select $1, $2::int",
                &["select", "$1", ",", "$2", ":", ":", "int"],
            ),
            (
                "set a = 1; reset a",
                &["set", "a", "=", "?", ";", "reset", "a"],
            ),
            (
                "select x'1F', b'01', 1.5e3, .5",
                &["select", "?", ",", "?", ",", "?", ",", "?"],
            ),
            ("select U&'d\\0061t'", &["select", "?"]),
            (
                "select 1.5e-3, 2E+4 - 1",
                &["select", "?", ",", "?", "-", "?"],
            ),
            ("select U&\"d\\0061t\"", &["select", "\"d\\0061t\""]),
        ];
        for (sql, want) in cases {
            assert_eq!(words(sql), *want, "{sql}");
        }
    }

    #[test]
    fn spans_and_leading_comments() {
        let sql = b" -- one\n /* two /* nested */ */ select  'x' ";
        let mut lexer = Lexer::new(sql);
        assert_eq!(lexer.next_comment(), Some(&b" one\n"[..]));
        assert_eq!(lexer.next_comment(), Some(&b" two /* nested */ "[..]));
        assert_eq!(lexer.next_comment(), None);
        let (token, span) = lexer.next_spanned().unwrap();
        assert!(token.is_word("select"));
        assert_eq!(&sql[span], b"select");
        let (token, span) = lexer.next_spanned().unwrap();
        assert_eq!(token, Token::Str(b"x"));
        assert_eq!(&sql[span], b"'x'");
        assert_eq!(Lexer::new(b"/* open").next_comment(), Some(&b" open"[..]));
    }

    #[test]
    fn unterminated_input_ends_cleanly() {
        for sql in [
            "select 'abc",
            "select \"abc",
            "select $$abc",
            "/* abc",
            "select E'\\",
        ] {
            let _ = words(sql);
        }
    }
}
