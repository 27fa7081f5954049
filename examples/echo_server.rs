//! A KCP echo server: `cargo run --example echo_server -- 127.0.0.1:29900`.
//! Speaks kcptun's defaults (AES from "it's a secrect", FEC 10/3, fast mode).

use kcp_session::{Config, Listener, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> kcp_session::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:29900".into());
    let config = Config::kcptun(Mode::Fast).build()?;
    let listener = Listener::listen(addr.as_str(), &config).await?;
    println!("echo server on {}", listener.local_addr());
    loop {
        let session = listener.accept().await?;
        println!(
            "session {:#010x} from {}",
            session.conv(),
            session.peer_addr()
        );
        tokio::spawn(async move {
            let (mut r, mut w) = session.into_split();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}
