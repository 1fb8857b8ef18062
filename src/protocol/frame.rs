//! Length-checked framing of protocol messages: `tag (1 byte) + length (4 bytes, self-inclusive) + body`.
//! The scanner only looks at headers; bodies are forwarded as the original bytes.

use bytes::{Buf, BytesMut};
use thiserror::Error;

/// Largest regular message we accept (PostgreSQL's own limit is 1 GiB - 1).
pub const MAX_FRAME_LEN: usize = 1024 * 1024 * 1024 - 1;
/// Largest startup-phase packet (StartupMessage, SSLRequest, CancelRequest).
/// PostgreSQL uses 10,000 bytes (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Header size of a regular message: tag + length.
pub const HEADER_LEN: usize = 5;
/// Largest message whose whole body the proxy waits for in order to read it
/// (ReadyForQuery, ParameterStatus, ...). Everything else streams through.
pub const MAX_INSPECTED_LEN: usize = 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {length} for message type {tag:?}")]
    BadLength { tag: char, length: i64 },
    #[error("message of type {tag:?} is {length} bytes, over the {max}-byte limit")]
    TooLarge {
        tag: char,
        length: usize,
        max: usize,
    },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
    #[error("malformed message of type {0:?}")]
    Malformed(char),
}

/// One complete message inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Message type byte.
    pub tag: u8,
    /// Offset of the first byte of the message (its tag) in the scanned buffer.
    pub start: usize,
    /// Total length of the message including tag and length field.
    pub len: usize,
}

impl FrameRef {
    /// The message body (after tag and length) within `buf`.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start + HEADER_LEN..self.start + self.len]
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` if fewer than 5 bytes are buffered.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if length < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            length: length.into(),
        });
    }
    // `length` is non-negative here, so the cast is lossless.
    let total = length as usize + 1;
    if total > max_len {
        return Err(FrameError::TooLarge {
            tag: tag as char,
            length: total,
            max: max_len,
        });
    }
    Ok(Some((tag, total)))
}

/// Returns the next complete frame starting at `offset`, if the buffer holds all of it.
pub fn next_frame(
    buf: &[u8],
    offset: usize,
    max_len: usize,
) -> Result<Option<FrameRef>, FrameError> {
    let rest = &buf[offset..];
    match header(rest, max_len)? {
        Some((tag, len)) if rest.len() >= len => Ok(Some(FrameRef {
            tag,
            start: offset,
            len,
        })),
        _ => Ok(None),
    }
}

/// Iterates over the complete frames at the front of a buffer.
pub struct Frames<'a> {
    buf: &'a [u8],
    offset: usize,
    max_len: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Frames {
            buf,
            offset: 0,
            max_len,
        }
    }

    /// Bytes covered by the complete frames returned so far.
    pub fn consumed(&self) -> usize {
        self.offset
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<FrameRef, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        match next_frame(self.buf, self.offset, self.max_len) {
            Ok(Some(frame)) => {
                self.offset += frame.len;
                Some(Ok(frame))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Whether the caller forwards a frame, swallows it, rewrites its head, or stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Forward,
    /// Consume the frame without forwarding it (a reply to a hidden statement).
    Drop,
    /// Leave this frame (and everything after it) in the input.
    Stop,
    /// Call again with more of this frame's body (at most MAX_INSPECTED_LEN is waited for).
    NeedMore,
    /// Send `with` instead of the frame's first `skip` bytes (header included), then the
    /// rest of the frame as it is. `with` may hold whole messages of its own.
    Replace {
        skip: usize,
        with: BytesMut,
    },
}

/// Moves messages from an input buffer to an output buffer as their bytes arrive.
/// Memory stays bounded whatever lengths a peer announces: only bodies the caller must
/// read (at most MAX_INSPECTED_LEN) are waited for whole.
#[derive(Debug, Clone, Default)]
pub struct Streamer {
    /// Body bytes of the current message still to pass unread.
    remaining: usize,
    /// Those bytes are dropped rather than forwarded.
    dropping: bool,
}

impl Streamer {
    /// True between messages (no body is half forwarded).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Forwards what can be forwarded. `on_frame(tag, len, body, complete)` is called once
    /// per message (`len` counts tag and length field) when its header has arrived. If
    /// `needs_body(tag)` and the message is at most MAX_INSPECTED_LEN, `body` is the whole
    /// body (`complete`); otherwise it is whatever prefix has arrived, possibly empty.
    pub fn pump(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
        needs_body: impl Fn(u8) -> bool,
        mut on_frame: impl FnMut(u8, usize, &[u8], bool) -> Flow,
    ) -> Result<Flow, FrameError> {
        // Forwarded bytes are copied in contiguous runs: `input[run..taken]` is pending.
        let (mut run, mut taken) = (0, 0);
        let mut flow = Flow::Forward;
        while taken < input.len() {
            let rest = &input[taken..];
            let (skip, dropped) = if self.remaining > 0 {
                let n = self.remaining.min(rest.len());
                self.remaining -= n;
                (n, self.dropping)
            } else {
                let Some((tag, len)) = header(rest, MAX_FRAME_LEN)? else {
                    break;
                };
                let inspect = needs_body(tag) && len <= MAX_INSPECTED_LEN;
                if inspect && rest.len() < len {
                    break;
                }
                let available = rest.len().min(len);
                let complete = inspect || available == len;
                match on_frame(tag, len, &rest[HEADER_LEN..available], complete) {
                    Flow::Stop => {
                        flow = Flow::Stop;
                        break;
                    }
                    Flow::NeedMore if available == len || available >= MAX_INSPECTED_LEN => {
                        return Err(FrameError::Malformed(tag as char));
                    }
                    Flow::NeedMore => break,
                    Flow::Replace { skip, with } => {
                        if skip < HEADER_LEN || skip > available {
                            return Err(FrameError::Malformed(tag as char));
                        }
                        append(output, &input[run..taken]);
                        append(output, &with);
                        taken += skip;
                        run = taken;
                        self.remaining = len - skip;
                        self.dropping = false;
                        continue;
                    }
                    decision => {
                        self.dropping = decision == Flow::Drop;
                        self.remaining = len - available;
                        (available, self.dropping)
                    }
                }
            };
            if dropped {
                append(output, &input[run..taken]);
                run = taken + skip;
            }
            taken += skip;
        }
        if run == 0 && taken == input.len() && output.is_empty() {
            // All of it passes as it is: the buffers trade places instead of copying
            // (the usual case, a request or a reply whole in one read).
            std::mem::swap(input, output);
            input.clear();
        } else {
            append(output, &input[run..taken]);
            input.advance(taken);
        }
        Ok(flow)
    }
}

/// Appends to `output`, in a spare buffer when it holds no memory (not a new allocation).
fn append(output: &mut BytesMut, bytes: &[u8]) {
    if !bytes.is_empty() {
        super::buffers::lend(output);
        output.extend_from_slice(bytes);
    }
}

/// Length of a complete startup-phase packet (`length (4) + payload`), if buffered.
pub fn startup_packet_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // The smallest valid packet is length + protocol code (8 bytes).
    if !(8..=MAX_STARTUP_LEN as i32).contains(&length) {
        return Err(FrameError::BadStartupLength(length.into()));
    }
    let len = length as usize;
    Ok((buf.len() >= len).then_some(len))
}

/// Reads a NUL-terminated string at the front of `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    // Statement and portal names are mostly empty or short: a plain scan of the first
    // bytes finds their end sooner than memchr's vector search, which is kept for text.
    let head = buf.len().min(SHORT_CSTR);
    let end = match buf[..head].iter().position(|&b| b == 0) {
        Some(end) => end,
        None => head + memchr::memchr(0, &buf[head..])?,
    };
    Some((&buf[..end], &buf[end + 1..]))
}

/// How many bytes `cstr` scans one by one before it searches with memchr.
const SHORT_CSTR: usize = 16;

/// The text of a body that is one C string (Query, CommandComplete): what comes before its
/// NUL, or all of it without one. A well-formed body ends at its NUL, so the end is looked
/// at first and no search is needed. (With a NUL before the end the message is malformed:
/// the server refuses such a Query without running any of it, so that judging all of it
/// instead changes nothing.)
pub fn c_text(body: &[u8]) -> &[u8] {
    match body.split_last() {
        Some((0, text)) => text,
        _ => cstr(body).map_or(body, |(text, _)| text),
    }
}

/// A whole message (tag, length, body), for unit tests anywhere in the crate.
#[cfg(test)]
pub(crate) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One C string's text: before its NUL, wherever that is; all of it without one.
    #[test]
    fn c_text_is_what_comes_before_the_nul() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"SELECT 1\0", b"SELECT 1"),
            (b"\0", b""),
            (b"", b""),
            (b"no nul", b"no nul"),
            // Malformed: a NUL before the end; the text then runs to the last byte.
            (b"SELECT 1\0DROP TABLE t\0", b"SELECT 1\0DROP TABLE t"),
            // Without a NUL at the end, the first one ends it.
            (b"UPDATE 1\0tail", b"UPDATE 1"),
        ];
        for (body, text) in cases {
            assert_eq!(c_text(body), *text, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn splits_complete_frames_and_stops_at_partial() {
        let mut buf = msg(b'Q', b"select 1\0");
        buf.extend(msg(b'S', b""));
        let partial = msg(b'P', b"abcdef");
        buf.extend_from_slice(&partial[..7]);
        let mut frames = Frames::new(&buf, MAX_FRAME_LEN);
        let first = frames.next().unwrap().unwrap();
        assert_eq!((first.tag, first.start, first.len), (b'Q', 0, 14));
        assert_eq!(first.body(&buf), b"select 1\0");
        let second = frames.next().unwrap().unwrap();
        assert_eq!((second.tag, second.start, second.len), (b'S', 14, 5));
        assert!(frames.next().is_none());
        assert_eq!(frames.consumed(), 19);
    }

    #[test]
    fn rejects_bad_lengths() {
        let cases: &[(&[u8], FrameError)] = &[
            (
                &[b'Q', 0, 0, 0, 3],
                FrameError::BadLength {
                    tag: 'Q',
                    length: 3,
                },
            ),
            (
                &[b'Q', 0xff, 0xff, 0xff, 0xff],
                FrameError::BadLength {
                    tag: 'Q',
                    length: -1,
                },
            ),
            (
                &[b'd', 0x7f, 0xff, 0xff, 0xff],
                FrameError::TooLarge {
                    tag: 'd',
                    length: 0x8000_0000,
                    max: MAX_FRAME_LEN,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(header(bytes, MAX_FRAME_LEN).unwrap_err(), *want);
        }
    }

    #[test]
    fn startup_length_is_bounded() {
        assert_eq!(startup_packet_len(&[0, 0, 0]).unwrap(), None);
        assert_eq!(startup_packet_len(&[0, 0, 0, 8, 1, 2]).unwrap(), None);
        assert_eq!(
            startup_packet_len(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]).unwrap(),
            Some(8)
        );
        assert!(startup_packet_len(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(startup_packet_len(&[0, 0, 0, 4]).is_err());
    }

    /// (output, on_frame calls as (tag, body), stopped).
    type Streamed = (Vec<u8>, Vec<(u8, Vec<u8>)>, bool);

    /// Feeds `bytes` in chunks of `step`.
    fn stream(bytes: &[u8], step: usize, stop_at: u8) -> Streamed {
        let mut streamer = Streamer::default();
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        let mut calls = Vec::new();
        for chunk in bytes.chunks(step) {
            input.extend_from_slice(chunk);
            let flow = streamer
                .pump(
                    &mut input,
                    &mut output,
                    |t| t == b'Z',
                    |t, _, body, _| {
                        calls.push((t, body.to_vec()));
                        if t == stop_at {
                            Flow::Stop
                        } else if t == b'N' {
                            Flow::Drop
                        } else {
                            Flow::Forward
                        }
                    },
                )
                .unwrap();
            if flow == Flow::Stop {
                return (output.to_vec(), calls, true);
            }
        }
        assert!(input.is_empty() && streamer.at_boundary());
        (output.to_vec(), calls, false)
    }

    #[test]
    fn streams_bodies_and_waits_only_for_inspected_ones() {
        let mut bytes = msg(b'D', &[7u8; 300]);
        bytes.extend(msg(b'Z', b"T"));
        bytes.extend(msg(b'C', b"SELECT 1\0"));
        for step in [1, 2, 5, 7, 64, 1000] {
            let (out, calls, stopped) = stream(&bytes, step, 0);
            assert!(!stopped);
            assert_eq!(out, bytes, "step {step}");
            let tags: Vec<u8> = calls.iter().map(|c| c.0).collect();
            assert_eq!(tags, b"DZC", "step {step}");
            assert_eq!(calls[1].1, b"T", "ReadyForQuery body is whole");
        }
    }

    #[test]
    fn dropped_frames_vanish_whole_however_they_arrive() {
        let mut bytes = msg(b'C', b"KEEP\0");
        bytes.extend(msg(b'N', &[9u8; 200]));
        bytes.extend(msg(b'Z', b"I"));
        let mut want = msg(b'C', b"KEEP\0");
        want.extend(msg(b'Z', b"I"));
        for step in [1, 3, 6, 100, 1000] {
            let (out, calls, _) = stream(&bytes, step, 0);
            assert_eq!(out, want, "step {step}");
            assert_eq!(calls.len(), 3);
        }
    }

    #[test]
    fn stops_in_front_of_a_frame() {
        let mut bytes = msg(b'Q', b"select 1\0");
        bytes.extend(msg(b'X', b""));
        bytes.extend(msg(b'Q', b"never\0"));
        let (out, _, stopped) = stream(&bytes, 1000, b'X');
        assert!(stopped);
        assert_eq!(out, msg(b'Q', b"select 1\0"));
    }

    #[test]
    fn huge_announced_length_is_not_buffered() {
        let mut streamer = Streamer::default();
        let mut input = BytesMut::from(&[b'd', 0x3f, 0xff, 0xff, 0xf0, 1, 2, 3][..]);
        let mut output = BytesMut::new();
        streamer
            .pump(
                &mut input,
                &mut output,
                |_| false,
                |_, _, _, _| Flow::Forward,
            )
            .unwrap();
        assert!(input.is_empty());
        assert_eq!(output.len(), 8);
        assert!(!streamer.at_boundary());
        // Over the inspection limit, a frame the caller wants to read streams too, marked
        // incomplete.
        let mut inspected = BytesMut::from(&[b'Q', 0x00, 0x20, 0x00, 0x00, b's'][..]);
        let mut complete = None;
        Streamer::default()
            .pump(
                &mut inspected,
                &mut output,
                |_| true,
                |_, _, _, c| {
                    complete = Some(c);
                    Flow::Forward
                },
            )
            .unwrap();
        assert_eq!(complete, Some(false));
        assert!(inspected.is_empty());
    }

    #[test]
    fn whole_input_into_an_empty_output_moves_without_a_copy() {
        let forward = |input: &mut BytesMut, output: &mut BytesMut| {
            Streamer::default()
                .pump(input, output, |_| false, |_, _, _, _| Flow::Forward)
                .unwrap()
        };
        let reply = [msg(b'T', b"row"), msg(b'Z', b"I")].concat();
        let mut input = BytesMut::from(&reply[..]);
        let at = input.as_ptr();
        let mut output = BytesMut::with_capacity(64);
        forward(&mut input, &mut output);
        assert_eq!(&output[..], &reply[..]);
        assert_eq!(output.as_ptr(), at, "the input's memory became the output");
        assert!(input.is_empty());
        // Behind bytes already waiting, the input is appended as before.
        let mut input = BytesMut::from(&msg(b'C', b"SELECT 1\0")[..]);
        forward(&mut input, &mut output);
        assert_eq!(
            &output[..],
            &[&reply[..], &msg(b'C', b"SELECT 1\0")[..]].concat()[..]
        );
        assert!(input.is_empty());
        // A part held back (a half-arrived header) stays in the input.
        let mut input = BytesMut::from(&[&msg(b'Z', b"I")[..], &[b'D', 0][..]].concat()[..]);
        let mut output = BytesMut::new();
        forward(&mut input, &mut output);
        assert_eq!(&output[..], &msg(b'Z', b"I")[..]);
        assert_eq!(&input[..], &[b'D', 0]);
    }

    #[test]
    fn cstr_splits_at_nul() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
        assert_eq!(cstr(b"\0"), Some((&b""[..], &b""[..])));
        // Around the end of the short scan, and past it (memchr's part).
        for len in [SHORT_CSTR - 1, SHORT_CSTR, SHORT_CSTR + 1, 200] {
            let mut buf = vec![b'x'; len];
            buf.extend_from_slice(b"\0rest\0");
            assert_eq!(
                cstr(&buf),
                Some((&buf[..len], &b"rest\0"[..])),
                "length {len}"
            );
            assert_eq!(cstr(&buf[..len]), None, "length {len} without its NUL");
        }
    }
}
