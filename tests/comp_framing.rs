//! kcptun's Snappy framing layer (src/tunnel/comp.rs): the reader's work is linear
//! in the bytes it reads however the inner stream splits them, and the bytes
//! agree with the `snap` crate's framing decoder.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use kcp_session::comp::{CompStream, MAX_CHUNK_DATA};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

const MARK: u8 = 0xA5;

/// Hands out `data` `piece` bytes per read and measures how much of the
/// offered buffer the consumer rewrote between reads: it paints the whole
/// unfilled part of every buffer it is given with `MARK` and, on each read,
/// counts the offered bytes that no longer hold it. A reader that re-zeroes
/// (resizes) its chunk buffer on every partial read shows up as quadratic.
struct Painting {
    data: Vec<u8>,
    at: usize,
    piece: usize,
    /// Offered bytes that were not `MARK` when offered.
    rewritten: u64,
    reads: u64,
}

impl AsyncRead for Painting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.reads += 1;
        let unfilled = buf.initialize_unfilled();
        this.rewritten += unfilled.iter().filter(|&&b| b != MARK).count() as u64;
        let n = this
            .piece
            .min(unfilled.len())
            .min(this.data.len() - this.at);
        unfilled.fill(MARK);
        unfilled[..n].copy_from_slice(&this.data[this.at..this.at + n]);
        buf.advance(n);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

async fn encode(data: &[u8]) -> Vec<u8> {
    let mut w = CompStream::new(Vec::new());
    for chunk in data.chunks(MAX_CHUNK_DATA) {
        w.write_all(chunk).await.expect("write to a Vec");
    }
    w.flush().await.expect("flush");
    w.into_inner()
}

/// Incompressible bytes, so each chunk body is as long as its data.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn one_byte_reads_cost_linear_work() {
    // One 16 KiB chunk read one byte at a time: a reader that resizes its
    // body buffer per partial read rewrites ~len²/2 = 134 M bytes; a linear
    // one at most a few times the stream length.
    let data = noise(16 * 1024);
    let stream = encode(&data).await;
    let mut r = CompStream::new(Painting {
        data: stream.clone(),
        at: 0,
        piece: 1,
        rewritten: 0,
        reads: 0,
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("decodes");
    assert_eq!(got, data, "bytes through one-byte reads");
    let p = r.get_ref();
    assert!(
        p.reads as usize >= stream.len(),
        "the reader saw one-byte reads"
    );
    assert!(
        p.rewritten <= 4 * stream.len() as u64,
        "reader rewrote {} buffer bytes for a {}-byte stream (quadratic)",
        p.rewritten,
        stream.len()
    );
}

#[tokio::test]
async fn piecewise_reads_match_snap_decoder() {
    let mut data = noise(150_000);
    data.extend(std::iter::repeat_n(b'z', 70_000)); // compressible chunks too
    let stream = encode(&data).await;
    let mut theirs = Vec::new();
    snap::read::FrameDecoder::new(&stream[..])
        .read_to_end(&mut theirs)
        .expect("snap decodes our stream");
    assert_eq!(theirs, data);
    // (The painting reader scans every buffer it is offered, so tiny pieces
    // of 64 KiB chunks would make the test itself slow; the one-byte case is
    // covered above.)
    for piece in [1000usize, 4096, 65_536 + 9] {
        let mut r = CompStream::new(Painting {
            data: stream.clone(),
            at: 0,
            piece,
            rewritten: 0,
            reads: 0,
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("decodes");
        assert!(got == data, "piece {piece}: bytes differ");
        assert!(
            r.get_ref().rewritten <= 4 * stream.len() as u64,
            "piece {piece}: rewrote {} bytes",
            r.get_ref().rewritten
        );
    }
}

/// Fuzz finding (snappy_frame): a stream whose first chunk is padding or a
/// skippable chunk was accepted (as empty, or with the data after it), while
/// golang/snappy's reader (kcptun's) and the `snap` crate refuse any stream
/// that does not start with the stream identifier.
#[tokio::test]
async fn stream_must_start_with_the_identifier() {
    let good = encode(b"payload after a leading chunk").await;
    for first in [0xfeu8, 0x80, 0xfd] {
        let mut stream = vec![first, 3, 0, 0, 1, 2, 3];
        stream.extend_from_slice(&good);
        assert!(
            snap::read::FrameDecoder::new(&stream[..])
                .read_to_end(&mut Vec::new())
                .is_err(),
            "snap refuses chunk type {first:#x} first"
        );
        let mut r = CompStream::new(Painting {
            data: stream.clone(),
            at: 0,
            piece: 1 << 16,
            rewritten: 0,
            reads: 0,
        });
        let got = r.read_to_end(&mut Vec::new()).await;
        assert!(
            got.is_err(),
            "chunk type {first:#x} before the identifier accepted: {got:?}"
        );
        // Only such a chunk: not an empty stream either.
        let lone = [first, 1, 0, 0, 9];
        let mut r = CompStream::new(&lone[..]);
        let got = r.read_to_end(&mut Vec::new()).await;
        assert!(
            got.is_err(),
            "lone chunk type {first:#x} read as a clean stream: {got:?}"
        );
    }
}
