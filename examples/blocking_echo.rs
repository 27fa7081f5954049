//! The blocking API without any async runtime: a listener on 127.0.0.1:0
//! echoes one message back to a dialed session.
//!
//! ```sh
//! cargo run --example blocking_echo
//! ```

use std::io::{Read, Write};
use std::time::Duration;

use kcp_session::blocking::{Listener, Session};
use kcp_session::Config;

fn main() -> kcp_session::Result<()> {
    let config = Config::builder()
        .crypt_kcptun("aes", "it's a secrect")
        .fec(10, 3)
        .read_timeout(Some(Duration::from_secs(5)))
        .build()?;
    let listener = Listener::listen("127.0.0.1:0", &config)?;
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || -> kcp_session::Result<()> {
        let mut s = listener.accept()?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf)?;
        s.write_all(&buf[..n])?;
        // Until the client has acknowledged the echo.
        s.drain()
    });

    let mut session = Session::dial(addr, &config)?;
    session.write_all(b"hello over kcp, no runtime")?;
    let mut echo = [0u8; 26];
    session.read_exact(&mut echo)?;
    println!(
        "echoed {:?} (conv {:#010x}, srtt {} ms)",
        String::from_utf8_lossy(&echo),
        session.conv(),
        session.srtt()
    );
    server.join().expect("server thread")?;
    Ok(())
}
