//! What the RTT estimate learns from, on virtual time over the simulated
//! link: only the first ACK of a segment's latest transmission
//! (docs/wire.md §5.3). A copy that FEC recovers after the segment was sent
//! again is acknowledged with the old copy's `ts`; kcp-go takes that ACK as
//! an RTT sample and so raises its RTO after every such recovery.

#![cfg(feature = "testing")]

use kcp_session::testing::{ConnectionPair, Link, LinkConfig, Side};
use kcp_session::{Config, Error, Mode, RttSamples};

/// What one request/response run saw.
#[derive(Debug)]
struct Run {
    /// Latency of each request, virtual ms.
    latency: Vec<u64>,
    /// Largest RTO either side had after any response.
    max_rto: u32,
    /// Segments the FEC decoders rebuilt, both sides.
    fec_recovered: u64,
}

/// 64-byte request, wait for the echo, repeat: the shape of the benchmark's
/// `rr-client` (docs/benchmarks.md), over a link losing `loss` each way.
fn request_response(cfg: &Config, loss: f64, seed: u64, requests: usize) -> Run {
    let link = Link::new(
        LinkConfig {
            loss,
            delay_ms: 1,
            ..LinkConfig::perfect(1)
        },
        seed,
    );
    let mut pair = ConnectionPair::new(3, cfg, cfg, link).unwrap();
    let mut run = Run {
        latency: Vec::with_capacity(requests),
        max_rto: 0,
        fec_recovered: 0,
    };
    let msg: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(seed as u8 | 1)).collect();
    let mut buf = [0u8; 256];
    for i in 0..requests {
        let t0 = pair.now_ms;
        let now = pair.now();
        pair.a.write(now, &msg).unwrap();
        pair.transmit(Side::A);
        let mut echoed = 0;
        let mut back = Vec::with_capacity(64);
        let done = pair.run_until(t0 + 60_000, |p| {
            let now = p.now();
            loop {
                match p.b.read(&mut buf) {
                    Ok(n) => p.b.write(now, &buf[..n]).map(drop).unwrap(),
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            p.transmit(Side::B);
            loop {
                match p.a.read(&mut buf) {
                    Ok(n) => {
                        echoed += n;
                        back.extend_from_slice(&buf[..n]);
                    }
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
            echoed == msg.len()
        });
        assert!(done, "seed {seed}: request {i} was never answered");
        assert_eq!(back, msg, "seed {seed}: request {i} echoed wrong bytes");
        run.latency.push(pair.now_ms - t0);
        if i >= 10 {
            // Both sides have an RTT sample by now (the first RTO is 200 ms).
            run.max_rto = run.max_rto.max(pair.a.rto()).max(pair.b.rto());
        }
    }
    run.fec_recovered = pair.a.stats().fec_recovered + pair.b.stats().fec_recovered;
    run
}

fn fast3_fec(rule: RttSamples) -> Config {
    Config::builder()
        .mode(Mode::Fast3)
        .fec(10, 3)
        .rtt_samples(rule)
        .idle_timeout(None)
        .dead_link(None)
        .build()
        .unwrap()
}

fn over_50ms(run: &Run) -> usize {
    run.latency.iter().filter(|&&l| l > 50).count()
}

/// A 2 ms path at 5% loss each way: every RTT sample of a transmission's
/// own ACK is 2–12 ms (ACKs wait for the 10 ms flush), so the RTO stays at
/// fast3's 30 ms floor unless a stale ACK gets in. Under kcp-go's rule the
/// same seeded runs take FEC-recovered copies' ACKs as samples.
#[test]
fn late_fec_recoveries_do_not_raise_the_rto() {
    let ours = fast3_fec(RttSamples::LatestTransmission);
    let kcp_go = fast3_fec(RttSamples::EveryAck);
    let (mut slow_ours, mut slow_go) = (0, 0);
    for seed in [1, 2, 3] {
        let run = request_response(&ours, 0.05, seed, 2000);
        let go = request_response(&kcp_go, 0.05, seed, 2000);
        assert!(
            run.fec_recovered > 100,
            "seed {seed}: FEC rebuilt {}",
            run.fec_recovered
        );
        assert_eq!(run.max_rto, 30, "seed {seed}: our RTO left the floor");
        assert!(
            go.max_rto > 60,
            "seed {seed}: kcp-go's rule kept RTO {}",
            go.max_rto
        );
        slow_ours += over_50ms(&run);
        slow_go += over_50ms(&go);
    }
    // Fewer requests wait for a second timeout.
    assert!(
        slow_ours < slow_go,
        "over 50 ms: ours {slow_ours}, kcp-go's rule {slow_go}"
    );
}

/// Without FEC nothing is recovered late, and the rule changes nothing.
#[test]
fn without_fec_both_rules_give_the_same_run() {
    let build = |rule| {
        Config::builder()
            .mode(Mode::Fast3)
            .rtt_samples(rule)
            .idle_timeout(None)
            .dead_link(None)
            .build()
            .unwrap()
    };
    for seed in [4, 5] {
        let ours = request_response(&build(RttSamples::LatestTransmission), 0.05, seed, 1000);
        let go = request_response(&build(RttSamples::EveryAck), 0.05, seed, 1000);
        assert_eq!(ours.latency, go.latency, "seed {seed}");
        assert_eq!(ours.max_rto, 30, "seed {seed}");
    }
}
