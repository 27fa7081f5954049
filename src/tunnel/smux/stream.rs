//! One smux stream: tokio `AsyncRead + AsyncWrite` over the session.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{CMD_FIN, CMD_PSH, CMD_UPD};
use super::session::{Shared, OUT_QUEUE_LIMIT};
use super::Version;
use crate::error::Error;

/// A multiplexed stream. Reads return the peer's bytes then EOF after its
/// FIN; `poll_shutdown` sends our FIN and waits until it is written (the
/// other direction stays open: a half-close); dropping
/// the stream sends FIN if not sent yet and discards unread data (returning
/// it to the session's receive budget), as smux's `Stream.Close` does.
#[derive(Debug)]
pub struct Stream {
    shared: Arc<Shared>,
    id: u32,
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>, id: u32) -> Stream {
        Stream { shared, id }
    }

    /// The stream id (odd when the client opened it, even for the server).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Waits until everything this stream queued has been written to the
    /// connection (and the connection flushed).
    fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let flushed = st.flushed;
        let closed = st.closed.as_ref().map(|r| r.to_error());
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::Closed.into()));
        };
        if flushed >= s.last_enqueued {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = closed {
            return Poll::Ready(Err(e.into()));
        }
        s.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let half = (st.config.max_stream_buffer / 2) as u32;
        let window = st.config.max_stream_buffer as u32;
        let v2 = st.config.version == Version::V2;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::Closed.into()));
        };
        if !s.recv.is_empty() {
            let n = s.recv.len().min(buf.remaining());
            let (a, b) = s.recv.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            s.recv.drain(..n);
            let mut upd = None;
            if v2 {
                // §7.6: UPD on the first read, then every streambuf/2 bytes.
                s.num_read = s.num_read.wrapping_add(n as u32);
                s.incr = s.incr.wrapping_add(n as u32);
                if s.incr >= half || s.num_read == n as u32 {
                    upd = Some(s.num_read);
                    s.incr = 0;
                }
            }
            let resume_reader = st.return_tokens(n);
            let mut notify_writer = false;
            if let (Some(consumed), None) = (upd, &st.closed) {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&consumed.to_le_bytes());
                p[4..].copy_from_slice(&window.to_le_bytes());
                st.push_frame(CMD_UPD, self.id, &p);
                notify_writer = true;
            }
            drop(guard);
            if resume_reader {
                self.shared.reader_notify.notify_one();
            }
            if notify_writer {
                self.shared.writer_notify.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.fin_received {
            return Poll::Ready(Ok(()));
        }
        if let Some(r) = &st.closed {
            return Poll::Ready(Err(r.to_error().into()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Some(r) = &st.closed {
            return Poll::Ready(Err(r.to_error().into()));
        }
        let frame_size = st.config.max_frame_size;
        let v2 = st.config.version == Version::V2;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::Closed.into()));
        };
        if s.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "smux stream already shut down for writing",
            )));
        }
        // v2 per-stream window (§7.6); u32 counters wrap as in smux.
        let mut window = i64::MAX;
        if v2 {
            let inflight = s.num_written.wrapping_sub(s.peer_consumed) as i32;
            if inflight < 0 {
                return Poll::Ready(Err(Error::SmuxConsumed.into()));
            }
            window = s.peer_window as i64 - inflight as i64;
            if window <= 0 {
                // Even after the peer's FIN we wait for its UPD: our peers
                // half-close. A Go smux peer's FIN is a full close and no UPD
                // follows, so callers drop the stream once reads hit EOF
                // (kcptun and our tunnel do).
                s.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        if st.out.len() >= OUT_QUEUE_LIMIT {
            if let Some(s) = st.streams.get_mut(&self.id) {
                s.write_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let mut written = 0usize;
        while written < buf.len() && window > 0 && st.out.len() < OUT_QUEUE_LIMIT {
            let sz = (buf.len() - written)
                .min(frame_size)
                .min(usize::try_from(window).unwrap_or(usize::MAX));
            st.push_frame(CMD_PSH, self.id, &buf[written..written + sz]);
            written += sz;
            window -= sz as i64;
        }
        let enqueued = st.enqueued;
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.num_written = s.num_written.wrapping_add(written as u32);
            s.last_enqueued = enqueued;
        }
        drop(guard);
        self.shared.writer_notify.notify_one();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flushed(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let queued_fin = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            let open = st.closed.is_none();
            match st.streams.get_mut(&self.id) {
                Some(s) if !s.fin_sent && open => {
                    s.fin_sent = true;
                    st.push_frame(CMD_FIN, self.id, &[]);
                    let enqueued = st.enqueued;
                    if let Some(s) = st.streams.get_mut(&self.id) {
                        s.last_enqueued = enqueued;
                    }
                    true
                }
                _ => false,
            }
        };
        if queued_fin {
            self.shared.writer_notify.notify_one();
        }
        self.poll_flushed(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let Some(s) = st.streams.remove(&self.id) else {
            return;
        };
        let mut notify_writer = false;
        if !s.fin_sent && st.closed.is_none() {
            st.push_frame(CMD_FIN, self.id, &[]);
            notify_writer = true;
        }
        let resume_reader = st.return_tokens(s.recv.len());
        drop(st);
        if notify_writer {
            self.shared.writer_notify.notify_one();
        }
        if resume_reader {
            self.shared.reader_notify.notify_one();
        }
    }
}
