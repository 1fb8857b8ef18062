//! Where things are after `${VAR}` substitution: a line writer that records each replaced span,
//! and the per-line map that takes an expanded-text position back to the source.

use super::problem::Pos;

/// Per line, the spans that substitution changed, to map expanded columns back.
#[derive(Debug, Default)]
pub(crate) struct ColumnMap {
    lines: Vec<Vec<Edit>>,
}

/// One replaced span, in 0-based character columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edit {
    out_start: usize,
    out_len: usize,
    in_start: usize,
    in_len: usize,
}

impl ColumnMap {
    /// Records the edits of the next line.
    pub(crate) fn push_line(&mut self, edits: Vec<Edit>) {
        self.lines.push(edits);
    }

    /// The source position of an expanded-text position: inside a replaced span, its start.
    pub(crate) fn to_source(&self, pos: Pos) -> Pos {
        let Some(edits) = pos.line.checked_sub(1).and_then(|i| self.lines.get(i)) else {
            return pos;
        };
        let column = pos.column.saturating_sub(1);
        let (mut out_end, mut in_end) = (0, 0);
        for edit in edits {
            if column < edit.out_start {
                break;
            }
            if column < edit.out_start + edit.out_len {
                return Pos {
                    line: pos.line,
                    column: edit.in_start + 1,
                };
            }
            out_end = edit.out_start + edit.out_len;
            in_end = edit.in_start + edit.in_len;
        }
        Pos {
            line: pos.line,
            column: column - out_end + in_end + 1,
        }
    }
}

/// One expanded line being written, with its edits.
pub(crate) struct LineOut<'a> {
    number: usize,
    /// The source line, without its line break.
    pub(crate) src: &'a [char],
    out: String,
    out_len: usize,
    edits: Vec<Edit>,
}

impl<'a> LineOut<'a> {
    pub(crate) fn new(number: usize, src: &'a [char]) -> Self {
        Self {
            number,
            src,
            out: String::new(),
            out_len: 0,
            edits: Vec::new(),
        }
    }

    /// Copies `src[from..to]` unchanged; returns `to`.
    pub(crate) fn copy(&mut self, from: usize, to: usize) -> usize {
        self.out.extend(&self.src[from..to]);
        self.out_len += to - from;
        to
    }

    pub(crate) fn replace(&mut self, in_start: usize, in_len: usize, text: &str) {
        let out_len = text.chars().count();
        self.edits.push(Edit {
            out_start: self.out_len,
            out_len,
            in_start,
            in_len,
        });
        self.out.push_str(text);
        self.out_len += out_len;
    }

    /// Source position of `src[column]`.
    pub(crate) fn pos(&self, column: usize) -> Pos {
        Pos {
            line: self.number,
            column: column + 1,
        }
    }

    /// Expanded-text position of the next character written.
    pub(crate) fn out_pos(&self) -> Pos {
        Pos {
            line: self.number,
            column: self.out_len + 1,
        }
    }

    /// The expanded line and its edits.
    pub(crate) fn finish(self) -> (String, Vec<Edit>) {
        (self.out, self.edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_after_a_longer_and_a_shorter_replacement() {
        // Source `ab${X}cd${LONG_NAME}ef` with X = "12345" and LONG_NAME = "z".
        let src: Vec<char> = "ab${X}cd${LONG_NAME}ef".chars().collect();
        let mut line = LineOut::new(1, &src);
        line.copy(0, 2);
        line.replace(2, 4, "12345");
        line.copy(6, 8);
        line.replace(8, 12, "z");
        line.copy(20, 22);
        let (text, edits) = line.finish();
        assert_eq!(text, "ab12345cdzef");
        let mut map = ColumnMap::default();
        map.push_line(edits);
        let source = |column| map.to_source(Pos { line: 1, column }).column;
        let expected = [
            (1, 1),
            (2, 2),
            (3, 3),
            (7, 3),
            (8, 7),
            (9, 8),
            (10, 9),
            (11, 21),
            (12, 22),
        ];
        for (expanded, original) in expected {
            assert_eq!(source(expanded), original, "column {expanded}");
        }
        assert_eq!(
            map.to_source(Pos { line: 2, column: 5 }),
            Pos { line: 2, column: 5 }
        );
    }
}
