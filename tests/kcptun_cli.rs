//! The `kcptun-rs` binary as an operator meets it: `KCPTUN_KEY`, `--log`,
//! `--quiet`, SIGUSR1 counter dumps, and the flags it refuses (each exits
//! with an error naming the flag).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kcptun-rs");
const BOUND: Duration = Duration::from_secs(20);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kcptun-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(role: &str, args: &[String], env_key: Option<&str>) -> Kill {
    let mut cmd = Command::new(BIN);
    cmd.arg(role)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.env_remove("KCPTUN_KEY");
    if let Some(k) = env_key {
        cmd.env("KCPTUN_KEY", k);
    }
    Kill(cmd.spawn().expect("spawn kcptun-rs"))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn log_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

/// A TCP echo target on a thread.
fn echo_target() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Whether `msg` comes back through the client at `port` within `wait`.
fn echoes(port: u16, msg: &[u8], wait: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(wait));
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).is_ok() && got == msg
}

fn common(log: &Path) -> Vec<String> {
    ["--mode", "fast3", "--log", log.to_str().expect("utf8")]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn key_from_env_log_and_quiet() {
    let dir = tmp("env");
    let (slog, clog) = (dir.join("server.log"), dir.join("client.log"));
    let target = echo_target();
    let udp = free_udp_port();
    let mut sargs = vec![
        "-l".into(),
        format!("127.0.0.1:{udp}"),
        "-t".into(),
        format!("127.0.0.1:{target}"),
        "--quiet".into(),
    ];
    sargs.extend(common(&slog));
    let _server = spawn("server", &sargs, Some("key-from-env"));
    wait_for("server listening", || log_has(&slog, "listening on"));

    // Right key from the environment only: the tunnel works.
    let local = free_tcp_port();
    let mut cargs = vec![
        "-l".into(),
        format!("127.0.0.1:{local}"),
        "-r".into(),
        format!("127.0.0.1:{udp}"),
    ];
    cargs.extend(common(&clog));
    let client = spawn("client", &cargs, Some("key-from-env"));
    wait_for("client listening", || log_has(&clog, "listening on"));
    let start = Instant::now();
    while !echoes(local, b"hello through the env key", Duration::from_secs(2)) {
        assert!(
            start.elapsed() < BOUND,
            "no echo with KCPTUN_KEY on both sides"
        );
    }
    // --log gets the stream messages; --quiet suppresses them.
    wait_for("client logs the stream", || log_has(&clog, "stream opened"));
    assert!(log_has(&slog, "remote address"));
    assert!(
        !log_has(&slog, "stream opened"),
        "--quiet server logged a stream"
    );
    drop(client);

    // --key on the command line wins over the environment: a wrong flag key
    // with the right env key gets nothing through.
    let local2 = free_tcp_port();
    let clog2 = dir.join("client2.log");
    let mut cargs = vec![
        "-l".into(),
        format!("127.0.0.1:{local2}"),
        "-r".into(),
        format!("127.0.0.1:{udp}"),
    ];
    cargs.extend(common(&clog2));
    cargs.extend(["--key".into(), "not-the-key".into()]);
    let _client2 = spawn("client", &cargs, Some("key-from-env"));
    wait_for("client 2 listening", || log_has(&clog2, "listening on"));
    assert!(
        !echoes(local2, b"wrong key", Duration::from_secs(3)),
        "a wrong --key must not reach the target"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr1_dumps_the_counters_to_the_log() {
    let dir = tmp("usr1");
    let log = dir.join("server.log");
    let mut args = vec![
        "-l".into(),
        format!("127.0.0.1:{}", free_udp_port()),
        "-t".into(),
        "127.0.0.1:9".into(),
    ];
    args.extend(common(&log));
    let server = spawn("server", &args, None);
    wait_for("server listening", || log_has(&log, "listening on"));
    assert!(!log_has(&log, "KCP SNMP:"));
    let st = Command::new("kill")
        .args(["-USR1", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    wait_for("the SNMP dump", || log_has(&log, "KCP SNMP:&{BytesSent:"));
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains("KCP SNMP:"))
        .expect("line");
    for name in kcp_session::Snmp::header() {
        assert!(
            line.contains(&format!(" {name}:")) || line.contains(&format!("{{{name}:")),
            "{name} in {line}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_flags_are_refused_by_name() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("client", &["--tcp"], "--tcp"),
        ("server", &["--tcp"], "--tcp"),
        ("client", &["--pprof"], "--pprof"),
        ("server", &["--pprof"], "--pprof"),
        ("client", &["--QPP", "--QPPCount", "0"], "QPPCount"),
        ("server", &["--QPP", "--QPPCount", "70000"], "QPPCount"),
        ("client", &["--smuxver", "3"], "--smuxver"),
        ("client", &["--keepalive", "0"], "keepalive"),
        ("client", &["--remoteaddr", "h:9-1"], "--remoteaddr"),
        ("server", &["--listen", "h:0"], "--listen"),
        ("client", &["--bogus"], "-bogus"),
        ("server", &["--conn", "2"], "-conn"),
    ];
    for (role, extra, name) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg(role);
        // kcptun refuses port 0 in --listen, so the server gets a real one.
        let listen = format!("127.0.0.1:{}", free_udp_port());
        match *role {
            "client" => cmd.args(["-l", "127.0.0.1:0", "-r", "127.0.0.1:9"]),
            _ => cmd.args(["-l", listen.as_str(), "-t", "127.0.0.1:9"]),
        };
        let out = cmd.args(*extra).stdin(Stdio::null()).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role} {extra:?}: {err}");
        assert!(
            err.contains(name),
            "{role} {extra:?}: {err:?} should name {name}"
        );
    }
}
