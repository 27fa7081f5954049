//! Byte-exact transfers over the deterministic simulated link (feature
//! `testing`): 1 MiB and 16 MiB, 0/5/20/30% loss with reordering and
//! duplication, stream and message mode, nodelay on and off, and windows from
//! 1 to 32768 segments.
#![cfg(feature = "testing")]

use kcp_session::testing::{
    run_transfer, LinkConfig, TransferConfig, TransferMode, TransferReport,
};

const MIB: usize = 1 << 20;
/// kcptun "fast3": nodelay 1, interval 10, resend 2, nc 1.
const NODELAY_ON: (i32, i32, i32, i32) = (1, 10, 2, 1);
/// kcp-go defaults except a shorter interval: no nodelay, no fast resend,
/// congestion control on.
const NODELAY_OFF: (i32, i32, i32, i32) = (0, 40, 0, 0);

#[derive(Clone, Copy, Debug)]
enum Mode {
    Stream,
    Message,
}

fn cell(
    bytes: usize,
    loss: f64,
    mode: Mode,
    nodelay: (i32, i32, i32, i32),
    seed: u64,
) -> TransferReport {
    let mut cfg = TransferConfig::new(bytes, loss, seed);
    cfg.nodelay = nodelay;
    cfg.mode = match mode {
        Mode::Stream => TransferMode::Stream { write_size: 8192 },
        // Up to 255 fragments of 1376 bytes.
        Mode::Message => TransferMode::Message {
            max_len: 255 * 1376,
        },
    };
    // Message mode needs rcv_wnd > 255 for a 255-fragment message to fit.
    cfg.window = if nodelay == NODELAY_ON {
        (1024, 1024)
    } else {
        (512, 512)
    };
    let r = run_transfer(&cfg).unwrap_or_else(|e| {
        panic!("{bytes} bytes, loss {loss}, {mode:?}, nodelay {nodelay:?}: {e}")
    });
    assert_eq!(r.bytes, bytes);
    if loss > 0.0 {
        assert!(r.link.dropped > 0, "the link dropped nothing: {r:?}");
        assert!(
            r.sender.retrans_segs > 0,
            "no retransmissions despite loss: {r:?}"
        );
    }
    if let Mode::Message = mode {
        // 1 MiB in messages averaging ~175 KB: several, not one.
        assert!(r.messages >= 2, "{r:?}");
    }
    r
}

fn matrix(bytes: usize, losses: &[f64]) {
    for (i, &loss) in losses.iter().enumerate() {
        for mode in [Mode::Stream, Mode::Message] {
            for nd in [NODELAY_ON, NODELAY_OFF] {
                cell(bytes, loss, mode, nd, 100 + i as u64);
            }
        }
    }
}

#[test]
fn one_mib_all_cells() {
    matrix(MIB, &[0.0, 0.05, 0.2, 0.3]);
}

#[test]
fn sixteen_mib_all_cells() {
    matrix(16 * MIB, &[0.0, 0.05, 0.2, 0.3]);
}

#[test]
fn no_loss_no_retransmission_on_a_clean_link() {
    let mut cfg = TransferConfig::new(MIB, 0.0, 1);
    cfg.link = LinkConfig::perfect(20);
    let r = run_transfer(&cfg).unwrap();
    assert_eq!(r.sender.retrans_segs, 0, "{r:?}");
    assert_eq!(r.receiver.repeat_segs, 0, "{r:?}");
    // 1 MiB in 1376-byte segments.
    assert_eq!(r.receiver.in_segs, MIB.div_ceil(1376) as u64, "{r:?}");
}

#[test]
fn windows_of_1_32_1024_32768() {
    // With mtu 300 (276-byte segments) 16 MiB is ~61K segments, so even the
    // 32768-segment window fills up.
    for (wnd, bytes, mtu) in [
        (1u32, 64 * 1024, 1400),
        (32, MIB, 1400),
        (1024, 4 * MIB, 1400),
        (32768, 16 * MIB, 300),
    ] {
        for loss in [0.0, 0.1] {
            let mut cfg = TransferConfig::new(bytes, loss, u64::from(wnd));
            cfg.window = (wnd, wnd);
            cfg.mtu = mtu;
            let r = run_transfer(&cfg).unwrap_or_else(|e| panic!("window {wnd}, loss {loss}: {e}"));
            assert_eq!(r.bytes, bytes);
            if wnd == 32768 {
                // More segments than the window: it was filled.
                assert!(r.receiver.in_segs > 32768, "{r:?}");
            }
        }
    }
}

#[test]
fn clock_wrap_during_transfer() {
    let mut cfg = TransferConfig::new(4 * MIB, 0.1, 9);
    cfg.clock_offset = u32::MAX - 500;
    let r = run_transfer(&cfg).unwrap();
    assert!(
        r.virtual_ms > 500,
        "the transfer must cross the wrap: {r:?}"
    );
}

#[test]
fn ack_no_delay_and_small_mtu() {
    let mut cfg = TransferConfig::new(MIB, 0.2, 5);
    cfg.ack_no_delay = true;
    cfg.mtu = 300;
    cfg.mode = TransferMode::Message { max_len: 255 * 276 };
    cfg.window = (512, 512);
    run_transfer(&cfg).unwrap();
}

#[test]
fn same_seed_same_run() {
    let cfg = TransferConfig::new(MIB, 0.2, 77);
    let a = run_transfer(&cfg).unwrap();
    let b = run_transfer(&cfg).unwrap();
    assert_eq!(a.virtual_ms, b.virtual_ms);
    assert_eq!(a.sender, b.sender);
    assert_eq!(a.link, b.link);
}

/// The harness drives any [`Endpoint`]: here a KCP engine behind a toy
/// framing layer (a 4-byte tag in front of every datagram), the way the
/// FEC+crypt codec will sit in front of it.
#[test]
fn generic_endpoints_with_a_framing_layer() {
    use kcp_session::kcp::KcpStats;
    use kcp_session::testing::{transfer, Endpoint, KcpEndpoint, Link, Pair};

    const TAG: &[u8; 4] = b"TAG!";
    struct Framed {
        inner: KcpEndpoint,
        rejected: u64,
    }
    fn framed(mut out: impl FnMut(&[u8])) -> impl FnMut(&[u8]) {
        move |d: &[u8]| {
            let mut v = TAG.to_vec();
            v.extend_from_slice(d);
            out(&v)
        }
    }
    impl Endpoint for Framed {
        fn send(&mut self, data: &[u8]) -> kcp_session::Result<()> {
            self.inner.send(data)
        }
        fn recv(&mut self, buf: &mut [u8]) -> kcp_session::Result<Option<usize>> {
            self.inner.recv(buf)
        }
        fn send_blocked(&self) -> bool {
            self.inner.send_blocked()
        }
        fn flush(&mut self, now: u32, out: &mut dyn FnMut(&[u8])) {
            self.inner.flush(now, &mut framed(out))
        }
        fn input(&mut self, d: &[u8], now: u32, out: &mut dyn FnMut(&[u8])) {
            match d.strip_prefix(TAG) {
                Some(kcp) => self.inner.input(kcp, now, &mut framed(out)),
                None => self.rejected += 1,
            }
        }
        fn next_deadline(&self, now: u32) -> Option<u32> {
            self.inner.next_deadline(now)
        }
        fn tick(&mut self, now: u32, out: &mut dyn FnMut(&[u8])) {
            self.inner.tick(now, &mut framed(out))
        }
        fn kcp_stats(&self) -> KcpStats {
            self.inner.kcp_stats()
        }
    }
    let cfg = TransferConfig::new(MIB, 0.1, 3);
    let side = || Framed {
        inner: KcpEndpoint::new(cfg.engine(42).unwrap()),
        rejected: 0,
    };
    let mut pair = Pair::new(side(), side(), Link::new(cfg.link.clone(), 3));
    let r = transfer(&mut pair, MIB, cfg.mode, 3, 600_000).unwrap();
    assert_eq!(r.bytes, MIB);
    assert_eq!(pair.a.rejected + pair.b.rejected, 0);
    assert!(r.link.sent_bytes > MIB as u64 + 4 * r.link.sent);
}
