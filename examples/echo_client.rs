//! Sends a line to the echo server and prints the reply:
//! `cargo run --example echo_client -- 127.0.0.1:29900 "hello"`.

use std::time::Duration;

use kcp_session::{Config, Mode, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> kcp_session::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:29900".into());
    let text = args.next().unwrap_or_else(|| "hello, kcp".into());
    let config = Config::kcptun(Mode::Fast)
        .read_timeout(Some(Duration::from_secs(5)))
        .build()?;
    let mut session = Session::dial(addr.as_str(), &config).await?;
    session.write_all(text.as_bytes()).await?;
    let mut reply = vec![0u8; text.len()];
    session.read_exact(&mut reply).await?;
    println!("{}", String::from_utf8_lossy(&reply));
    println!("srtt {} ms, rto {} ms", session.srtt(), session.rto());
    session.close()
}
