//! kcptun's compression layer (src/tunnel/comp.rs) against the `snap` crate's
//! framing decoder.
//!
//! 1. Arbitrary bytes, handed to our reader in input-chosen pieces: where
//!    our reader yields data, `snap::read::FrameDecoder` must yield the same
//!    bytes; where ours fails, so must it (and the other way round).
//! 2. Input data written through our writer in input-chosen writes decodes
//!    with `snap` and with our reader to exactly that data.

#![no_main]

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use fuzz_util::Input;
use kcp_session::comp::CompStream;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// Hands out `data` in pieces of the given sizes (cycled), never blocking.
struct Pieces {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    i: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let size = this.sizes[this.i % this.sizes.len()];
        this.i += 1;
        let n = size.min(buf.remaining()).min(this.data.len() - this.at);
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn ours(data: Vec<u8>, sizes: Vec<usize>, read_size: usize) -> std::io::Result<Vec<u8>> {
    runtime().block_on(async move {
        let mut r = CompStream::new(Pieces {
            data,
            at: 0,
            sizes,
            i: 0,
        });
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
}

fn theirs(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    snap::read::FrameDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sizes: Vec<usize> = (0..4).map(|_| 1 + input.below(70_000)).collect();
    let read_size = 1 + input.below(70_000);
    let round_trip = input.u8() & 1 == 1;
    let body = input.rest().to_vec();

    if !round_trip {
        let a = ours(body.clone(), sizes, read_size);
        let b = theirs(&body);
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert!(x == y, "decoders disagree on the bytes"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "decoders disagree: ours {:?}, snap {:?}",
                a.as_ref().map(|v| v.len()),
                b.as_ref().map(|v| v.len())
            ),
        }
        return;
    }

    // Round trip through our writer, in writes of the chosen sizes.
    let encoded = runtime().block_on(async {
        let mut w = CompStream::new(Vec::new());
        let mut at = 0;
        let mut i = 0;
        while at < body.len() {
            let n = sizes[i % sizes.len()].min(body.len() - at);
            w.write_all(&body[at..at + n])
                .await
                .expect("write to a Vec");
            at += n;
            i += 1;
        }
        w.flush().await.expect("flush");
        w.into_inner()
    });
    assert_eq!(theirs(&encoded).expect("snap decodes our stream"), body);
    let back = ours(encoded, sizes, read_size).expect("we decode our stream");
    assert_eq!(back, body);
});
