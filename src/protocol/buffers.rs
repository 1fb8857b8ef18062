//! Read and write buffers lent from a small stack of spares per thread: a session holds
//! memory only while bytes are in flight (an idle client holds none), and the buffer a
//! wake takes is the one the last wake gave back, still in the cache (for the kernel's
//! copies too).

use std::cell::RefCell;

use bytes::BytesMut;

/// Room kept free in read buffers before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Spare buffers kept per thread; more are freed.
const SPARES_KEPT: usize = 64;
/// A buffer grown beyond this (a long row, a COPY) is freed rather than kept.
const LARGEST_KEPT: usize = 4 * READ_CHUNK;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Gives a buffer that holds no memory a spare one (the last given back).
#[inline]
pub fn lend(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = SPARES
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK));
    }
}

/// Makes room for a read, in a lent buffer when `buf` holds none.
pub fn reserve(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        lend(buf);
        return;
    }
    rewind(buf);
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Gives an empty buffer's memory back to the spares (nothing when it holds bytes).
#[inline]
pub fn give_back(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() != 0 {
        keep(std::mem::take(buf));
    }
}

fn keep(mut buf: BytesMut) {
    rewind(&mut buf);
    // Only memory of the usual size is kept (after `rewind`, a buffer whose front is
    // still shared with another counts only what lies after its start).
    if (READ_CHUNK / 4..=LARGEST_KEPT).contains(&buf.capacity()) {
        SPARES.with_borrow_mut(|spares| {
            if spares.len() < SPARES_KEPT {
                spares.push(buf);
            }
        });
    }
}

/// Moves an empty buffer's start back to the front of its allocation (no copy, no
/// allocation; nothing when it is there already or the memory is shared): reads and
/// writes then keep touching the same few cache lines instead of walking the allocation.
fn rewind(buf: &mut BytesMut) {
    if buf.is_empty() {
        // Asking for more than the capacity after the start reclaims what lies before it.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_lent() {
        let mut first = BytesMut::new();
        reserve(&mut first);
        assert!(first.capacity() >= READ_CHUNK / 4);
        first.extend_from_slice(b"request");
        let address = first.as_ptr();
        give_back(&mut first);
        assert_ne!(first.capacity(), 0, "a buffer holding bytes stays");
        first.clear();
        give_back(&mut first);
        assert_eq!(first.capacity(), 0, "an empty one goes back");
        let mut second = BytesMut::new();
        lend(&mut second);
        assert_eq!(second.as_ptr(), address);
        assert!(second.is_empty());
    }

    #[test]
    fn grown_and_small_buffers_are_not_kept() {
        let mut grown = BytesMut::with_capacity(LARGEST_KEPT * 2);
        give_back(&mut grown);
        let mut small = BytesMut::with_capacity(64);
        give_back(&mut small);
        let mut next = BytesMut::new();
        lend(&mut next);
        assert_eq!(
            next.capacity(),
            READ_CHUNK,
            "a new buffer, not either of those"
        );
    }
}
