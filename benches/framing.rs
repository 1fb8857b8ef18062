//! Hot-path benchmarks without a database: scanning frames in relay buffers,
//! decoding startup packets, encoding proxy replies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use bytes::BytesMut;
use pgstrata::protocol::frame::{Frames, MAX_FRAME_LEN};
use pgstrata::protocol::message::{self, Backend};
use pgstrata::protocol::{reply, startup, ErrorReply, SqlState, TxStatus};

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A server response: RowDescription-like header, `rows` DataRows, CommandComplete, ReadyForQuery.
fn result_set(rows: usize, row_len: usize) -> Vec<u8> {
    let mut buf = message(b'T', &[0u8; 40]);
    let row = message(b'D', &vec![b'x'; row_len]);
    for _ in 0..rows {
        buf.extend_from_slice(&row);
    }
    buf.extend(message(b'C', b"SELECT 1\0"));
    buf.extend(message(b'Z', b"I"));
    buf
}

/// What the relay does per server read: walk the frames, inspect the few it must.
fn scan_server(buf: &[u8]) -> usize {
    let mut ready = 0;
    let mut frames = Frames::new(buf, MAX_FRAME_LEN);
    for frame in frames.by_ref() {
        let frame = frame.expect("valid frame");
        if Backend::from_tag(frame.tag) == Backend::ReadyForQuery {
            ready += usize::from(message::ready_status(frame.body(buf)).is_some());
        }
    }
    ready + frames.consumed()
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_server_frames");
    for (rows, row_len) in [(1, 16), (100, 64), (1000, 200)] {
        let buf = result_set(rows, row_len);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{rows}x{row_len}B")),
            &buf,
            |b, buf| b.iter(|| scan_server(black_box(buf))),
        );
    }
    group.finish();

    // pgbench -M prepared style batch: Bind, Execute, Sync.
    let mut batch = message(b'B', &[0u8; 30]);
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    c.bench_function("scan_client_bind_execute_sync", |b| {
        b.iter(|| Frames::new(black_box(&batch), MAX_FRAME_LEN).count())
    });

    let mut packet = Vec::new();
    let body = b"\0\x03\0\0user\0app\0database\0app\0application_name\0pgbench\0\0";
    packet.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    packet.extend_from_slice(body);
    c.bench_function("decode_startup_message", |b| {
        b.iter(|| startup::decode(black_box(&packet)).expect("startup"))
    });

    c.bench_function("encode_error_and_ready", |b| {
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            out.clear();
            ErrorReply::error(SqlState::TOO_MANY_CONNECTIONS, "pool timeout").encode(&mut out);
            reply::ready_for_query(&mut out, TxStatus::Idle);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, framing);
criterion_main!(benches);
