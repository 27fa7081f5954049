//! Replays traces recorded from real kcp-go v5.6.72 KCP engines
//! (`interop/vectors/kcp_gen_test.go`): the same calls at the same times must
//! write byte-identical datagrams and return the same values.

use kcp_session::kcp::{FlushKind, Kcp, PacketKind, RttSamples, TimeoutResend};
use kcp_session::Error;
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    traces: Vec<Trace>,
}

#[derive(Deserialize)]
struct Trace {
    name: String,
    config: Config,
    ops: Vec<Op>,
}

#[derive(Deserialize)]
struct Config {
    conv: u32,
    nodelay: [i32; 4],
    wnd: [u32; 2],
    mtu: usize,
    stream: bool,
}

#[derive(Deserialize)]
struct Op {
    op: String,
    now: u32,
    #[serde(default)]
    data: String,
    #[serde(default)]
    regular: bool,
    #[serde(default)]
    ack_no_delay: bool,
    #[serde(default)]
    full: bool,
    ret: i64,
    #[serde(default)]
    crc: u32,
    #[serde(default)]
    out: Option<Vec<String>>,
    wait_snd: usize,
}

fn replay(t: &Trace) -> usize {
    let c = &t.config;
    let mut k = Kcp::new(c.conv);
    // The traces are kcp-go's own engine: its RTT rule, sample for sample.
    k.set_rtt_samples(RttSamples::EveryAck);
    k.set_timeout_resend(TimeoutResend::EverySegment);
    k.set_nodelay(c.nodelay[0], c.nodelay[1], c.nodelay[2], c.nodelay[3]);
    k.set_wndsize(c.wnd[0], c.wnd[1]);
    k.set_mtu(c.mtu).unwrap();
    k.set_stream_mode(c.stream);
    let mut buf = vec![0u8; 1 << 20];
    let mut datagrams = 0;
    for (i, op) in t.ops.iter().enumerate() {
        let data = hex::decode(&op.data).unwrap();
        let mut out: Vec<String> = Vec::new();
        let mut sink = |d: &[u8]| out.push(hex::encode(d));
        let ctx = || format!("{} op #{i} ({} at {})", t.name, op.op, op.now);
        match op.op.as_str() {
            "send" => {
                let r = k.send(&data);
                match op.ret {
                    0 => assert!(r.is_ok(), "{}: {r:?}", ctx()),
                    -1 => assert!(matches!(r, Err(Error::EmptyMessage)), "{}", ctx()),
                    _ => assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{}", ctx()),
                }
            }
            "input" => {
                let kind = if op.regular {
                    PacketKind::Regular
                } else {
                    PacketKind::Recovered
                };
                let r = k.input(&data, kind, op.ack_no_delay, op.now, &mut sink);
                let ok = match op.ret {
                    0 => r.is_ok(),
                    -1 => matches!(r, Err(Error::Truncated(_) | Error::ConvMismatch { .. })),
                    -2 => matches!(r, Err(Error::Truncated(_))),
                    _ => matches!(r, Err(Error::Malformed(_))),
                };
                assert!(ok, "{}: kcp-go returned {}, we {r:?}", ctx(), op.ret);
            }
            "flush" => {
                let kind = if op.full {
                    FlushKind::Full
                } else {
                    FlushKind::AckOnly
                };
                let d = k.flush(kind, op.now, &mut sink);
                assert_eq!(i64::from(d), op.ret, "{}: next-flush delay", ctx());
            }
            "recv" => match k.recv(&mut buf).unwrap() {
                None => assert_eq!(op.ret, -1, "{}", ctx()),
                Some(n) => {
                    assert_eq!(n as i64, op.ret, "{}", ctx());
                    assert_eq!(crc32fast::hash(&buf[..n]), op.crc, "{}: data", ctx());
                }
            },
            other => panic!("unknown op {other}"),
        }
        let want = op.out.clone().unwrap_or_default();
        assert_eq!(out, want, "{}: datagrams differ", ctx());
        datagrams += out.len();
        assert_eq!(k.wait_snd(), op.wait_snd, "{}: WaitSnd", ctx());
    }
    datagrams
}

fn replay_file(name: &str) {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let f: File = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!f.traces.is_empty());
    let total: usize = f.traces.iter().map(replay).sum();
    assert!(total > 0, "{name}: the traces wrote no datagrams");
}

#[test]
fn kcp_go_trace_fast_stream() {
    replay_file("kcp_trace_fast_stream.json");
}

#[test]
fn kcp_go_trace_normal_message_across_clock_wrap() {
    replay_file("kcp_trace_normal_message_wrap.json");
}

#[test]
fn kcp_go_trace_hostile_inputs() {
    replay_file("kcp_trace_hostile.json");
}

#[test]
fn kcp_go_trace_scripted_probe_rto_retransmit() {
    replay_file("kcp_trace_scripted.json");
}
