//! A session and a listener over a transport of our own: UDP with every
//! byte XORed with a key (a toy obfuscating wrapper; any `Transport` works
//! the same way: fake TCP, a tunnel, a packet source the program pushes).
//!
//! Run: `cargo run --example custom_transport`

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use kcp_session::transport::{RecvBatch, Transmits, Transport, UdpTransport, Writable};
use kcp_session::{Config, Listener, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// UDP, XORed.
#[derive(Debug)]
struct Xor {
    udp: UdpTransport,
    key: u8,
    /// Receive scratch, reused (one receiver at a time).
    scratch: std::sync::Mutex<RecvBatch>,
}

impl Xor {
    async fn bind(addr: &str, key: u8) -> std::io::Result<Arc<Xor>> {
        let udp = UdpTransport::new(tokio::net::UdpSocket::bind(addr).await?);
        let scratch = std::sync::Mutex::new(RecvBatch::new(16));
        Ok(Arc::new(Xor { udp, key, scratch }))
    }
}

impl Transport for Xor {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        batch: &mut RecvBatch,
    ) -> Poll<std::io::Result<usize>> {
        let mut raw = self.scratch.lock().unwrap();
        raw.clear();
        let n = std::task::ready!(self.udp.poll_recv(cx, &mut raw))?;
        for i in 0..n {
            if let Some((d, from)) = raw.get_mut(i) {
                d.iter_mut().for_each(|b| *b ^= self.key);
                batch.push(d, from);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn try_send(&self, to: SocketAddr, datagrams: &Transmits<'_>) -> std::io::Result<usize> {
        let mut buf = [0u8; 1500];
        for (i, d) in datagrams.iter().enumerate() {
            for (o, b) in buf.iter_mut().zip(d) {
                *o = b ^ self.key;
            }
            match self.udp.socket().try_send_to(&buf[..d.len()], to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(i),
                Err(e) => return Err(e),
            }
        }
        Ok(datagrams.len())
    }

    fn writable(&self) -> Writable<'_> {
        self.udp.writable()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().crypt_kcptun("aes", "secret").build()?;

    let server_t = Xor::bind("127.0.0.1:0", 0x5a).await?;
    let server_addr = server_t.local_addr()?;
    let listener = Listener::with_transport(server_t, &config)?;

    let client = Session::with_transport(
        Xor::bind("127.0.0.1:0", 0x5a).await?,
        server_addr,
        1,
        &config,
    )?;
    let (mut r, mut w) = client.into_split();
    w.write_all(b"hello over a custom transport").await?;

    let mut accepted = listener.accept().await?;
    let mut buf = [0u8; 64];
    let n = accepted.read(&mut buf).await?;
    accepted.write_all(&buf[..n]).await?;

    let n = r.read(&mut buf).await?;
    println!("echoed: {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
