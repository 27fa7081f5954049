//! The owned read and write halves of a [`Session`](super::Session).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Result;
use crate::rate::RateLimiter;
use crate::stats::Snmp;

use super::shared::*;
#[cfg(doc)]
use super::Session;

/// The read half of a [`Session`].
pub struct OwnedReadHalf {
    pub(super) shared: Arc<Shared>,
    pub(super) _guard: Arc<CloseGuard>,
    pub(super) rd: Timeout,
}

impl std::fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf")
            .field("conv", &self.shared.conv)
            .finish()
    }
}

impl OwnedReadHalf {
    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The session's counters.
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// See [`Session::recv_msg`].
    pub async fn recv_msg(&mut self, buf: &mut [u8]) -> Result<usize> {
        let shared = self.shared.clone();
        let rd = &mut self.rd;
        std::future::poll_fn(|cx| poll_recv_msg(&shared, rd, cx, buf)).await
    }
    /// See [`Session::try_read`].
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        try_read_impl(&self.shared, buf)
    }
    /// See [`Session::try_recv_msg`].
    pub fn try_recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        try_recv_msg_impl(&self.shared, buf)
    }
    /// See [`Session::readable`].
    pub async fn readable(&self) {
        readable_impl(&self.shared).await
    }
    /// See [`Session::set_read_notify`].
    pub fn set_read_notify(&self, f: impl FnMut() + Send + 'static) {
        set_read_notify_impl(&self.shared, Some(Box::new(f)));
    }
    /// See [`Session::clear_read_notify`].
    pub fn clear_read_notify(&self) {
        set_read_notify_impl(&self.shared, None);
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_impl(&this.shared, &mut this.rd, cx, buf)
    }
}

/// The write half of a [`Session`].
pub struct OwnedWriteHalf {
    pub(super) shared: Arc<Shared>,
    pub(super) _guard: Arc<CloseGuard>,
    pub(super) wr: Timeout,
}

impl std::fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteHalf")
            .field("conv", &self.shared.conv)
            .finish()
    }
}

impl OwnedWriteHalf {
    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The session's counters.
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// See [`Session::send_msg`].
    pub async fn send_msg(&mut self, msg: &[u8]) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_send_msg(&shared, wr, cx, msg)).await
    }
    /// See [`Session::drain`].
    pub async fn drain(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_drain(&shared, wr, cx)).await
    }
    /// Closes the whole session (see [`Session::close`]).
    pub fn close(&self) -> Result<()> {
        close_shared(&self.shared)
    }
    /// See [`Session::set_rate_limit`].
    pub fn set_rate_limit(&self, bytes_per_second: u32) {
        set_rate_limiter_impl(&self.shared, RateLimiter::new(bytes_per_second).ok());
    }
    /// See [`Session::set_rate_limiter`].
    pub fn set_rate_limiter(&self, limiter: Option<RateLimiter>) {
        set_rate_limiter_impl(&self.shared, limiter);
    }
    /// See [`Session::rate_limiter`].
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        self.shared.lock().conn.rate_limiter().cloned()
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_impl(&this.shared, &mut this.wr, cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush_impl(&self.shared)
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = close_shared(&self.shared);
        Poll::Ready(Ok(()))
    }
}
