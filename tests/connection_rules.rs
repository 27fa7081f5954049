//! The session rules of the pure `Connection`, on virtual time over the
//! simulated link (`testing::ConnectionPair`): no sockets, no tokio, no
//! clocks; every run is reproducible from its seed.

#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcp_session::connection::{CloseReason, Connection, Event};
use kcp_session::testing::{test_data, ConnectionPair, Link, LinkConfig, Side};
use kcp_session::{Config, CryptSpec, Error, StreamMode};

fn aes() -> CryptSpec {
    CryptSpec::Kcptun {
        name: "aes".into(),
        passphrase: "it's a secret".into(),
    }
}

fn quiet(b: kcp_session::ConfigBuilder) -> kcp_session::ConfigBuilder {
    b.idle_timeout(None).dead_link(None)
}

/// Writes from A as much of `data[*sent..]` as the window takes and puts it
/// on the link.
fn write_from_a(pair: &mut ConnectionPair, data: &[u8], sent: &mut usize) {
    let now = pair.now();
    while *sent < data.len() {
        match pair.a.write(now, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    pair.transmit(Side::A);
}

/// Reads everything `conn` has ready onto the end of `got`.
fn read_into(conn: &mut Connection, buf: &mut [u8], got: &mut Vec<u8>) {
    loop {
        match conn.read(buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Writes `data` from A as the window allows and reads everything B
/// receives, stepping virtual time; returns what B read and when the last
/// byte arrived (ms).
fn stream_a_to_b(pair: &mut ConnectionPair, data: &[u8], limit_ms: u64) -> (Vec<u8>, u64) {
    let mut sent = 0;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    let done = pair.run_until(limit_ms, |p| {
        write_from_a(p, data, &mut sent);
        read_into(&mut p.b, &mut buf, &mut got);
        p.transmit(Side::B);
        got.len() == data.len()
    });
    assert!(done, "{} of {} bytes arrived", got.len(), data.len());
    let at = pair.now_ms;
    (got, at)
}

#[test]
fn aes_fec_stream_over_a_lossy_reordering_link_is_byte_exact() {
    for seed in [1, 2, 3] {
        let cfg = quiet(Config::builder().crypt(aes()).fec(10, 3))
            .build()
            .unwrap();
        let link = Link::new(
            LinkConfig {
                loss: 0.1,
                duplicate: 0.05,
                reorder: 0.1,
                reorder_delay_ms: 30,
                delay_ms: 20,
                jitter_ms: 5,
            },
            seed,
        );
        let mut pair = ConnectionPair::new(7, &cfg, &cfg, link).unwrap();
        let data = test_data(512 * 1024, seed);
        let (got, _) = stream_a_to_b(&mut pair, &data, 600_000);
        assert!(got == data, "seed {seed}: bytes differ");
        let s = pair.b.stats();
        assert!(s.fec_recovered > 0, "seed {seed}: FEC rebuilt nothing");
        assert_eq!(s.in_csum_errors, 0);
    }
}

#[test]
fn idle_timeout_ends_a_session_at_exactly_the_timeout_after_the_last_datagram() {
    let cfg = Config::builder()
        .idle_timeout(Some(Duration::from_secs(5)))
        .dead_link(None)
        .build()
        .unwrap();
    let link = Link::new(LinkConfig::perfect(10), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    // A datagram from B at 3 s: A's idle clock restarts then.
    pair.run_until(3000, |_| false);
    let now = pair.now();
    pair.b.write(now, b"ping").unwrap();
    pair.transmit(Side::B);
    assert!(pair.run_until(20_000, |p| p.a.is_closed()));
    assert_eq!(pair.a.close_reason(), Some(&CloseReason::IdleTimeout));
    // B's datagram arrived at 3010 ms (10 ms link delay).
    assert_eq!(pair.now_ms, 3010 + 5000);
    assert_eq!(
        pair.a.poll_event(),
        Some(Event::Closed(CloseReason::IdleTimeout))
    );
    let mut buf = [0u8; 16];
    assert!(
        matches!(pair.a.read(&mut buf), Ok(4)),
        "received data stays readable"
    );
    assert!(matches!(pair.a.read(&mut buf), Err(Error::IdleTimeout)));
    assert!(matches!(
        pair.a.write(pair.now(), b"x"),
        Err(Error::IdleTimeout)
    ));
}

#[test]
fn dead_link_ends_after_exactly_n_transmissions() {
    for limit in [1u32, 3, 8] {
        let cfg = Config::builder()
            .idle_timeout(None)
            .dead_link(Some(limit))
            .build()
            .unwrap();
        let link = Link::new(LinkConfig::lossy(1.0), 9);
        let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
        let now = pair.now();
        pair.a.write(now, b"hello").unwrap();
        pair.transmit(Side::A);
        assert!(
            pair.run_until(600_000, |p| p.a.is_closed()),
            "limit {limit}"
        );
        assert_eq!(pair.a.close_reason(), Some(&CloseReason::DeadLink(limit)));
        let sent = pair.link.stats().sent;
        assert_eq!(sent, u64::from(limit), "datagrams sent before giving up");
    }
}

#[test]
fn write_delay_holds_data_until_the_timer_tick_or_flush() {
    let mut buf = vec![0u8; 2048];
    for delay in [false, true] {
        let cfg = quiet(Config::builder().write_delay(delay)).build().unwrap();
        let link = Link::new(LinkConfig::perfect(5), 1);
        let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
        let now = pair.now();
        pair.a.write(now, b"data").unwrap();
        let at_once = pair.a.poll_transmit(now, &mut buf).is_some();
        assert_eq!(at_once, !delay, "write_delay {delay}");
        if delay {
            // flush() asks for it at the next timer pass, which is due now.
            pair.a.flush();
            assert_eq!(pair.a.poll_timeout(), Some(now));
            pair.a.handle_timeout(now);
            assert!(pair.a.poll_transmit(now, &mut buf).is_some());
        }
    }
}

#[test]
fn rate_limit_paces_application_bytes_on_virtual_time() {
    // 100 kB/s with a one-second burst: 500 kB are accepted in 4 s.
    let cfg = quiet(Config::builder().rate_limit(100_000).window(1024, 1024))
        .build()
        .unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    let data = test_data(500_000, 4);
    let mut sent = 0;
    let mut buf = vec![0u8; 65536];
    let mut last_accept = 0;
    let mut waits = 0;
    while sent < data.len() {
        let now = pair.now();
        match pair.a.write(now, &data[sent..]) {
            Ok(n) => {
                sent += n;
                last_accept = pair.now_ms;
            }
            Err(Error::WouldBlock) => {
                let at = pair
                    .a
                    .pace_until()
                    .expect("blocked on tokens, not the window");
                waits += 1;
                let ms = at.duration_since(now).as_millis() as u64 + 1;
                let target = pair.now_ms + ms;
                pair.run_until(target, |_| false);
            }
            Err(e) => panic!("{e}"),
        }
        while let Ok(n @ 1..) = pair.b.read(&mut buf) {
            let _ = n;
        }
        pair.transmit(Side::A);
        pair.transmit(Side::B);
    }
    assert!(waits > 0);
    assert!(
        (3990..=4100).contains(&last_accept),
        "500 kB at 100 kB/s (burst 100 kB) accepted by {last_accept} ms"
    );
}

#[test]
fn oob_reaches_the_peer_handler_only_with_fec() {
    let cfg = quiet(Config::builder().fec(4, 2)).build().unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    pair.b
        .set_oob_handler(move |d| g.lock().unwrap().push(d.to_vec()))
        .unwrap();
    pair.a.send_oob(b"out of band").unwrap();
    pair.transmit(Side::A);
    pair.run_until(100, |_| false);
    assert_eq!(*got.lock().unwrap(), vec![b"out of band".to_vec()]);
    let too_big = vec![0u8; pair.a.oob_max_size() + 1];
    assert!(matches!(
        pair.a.send_oob(&too_big),
        Err(Error::MessageTooLarge { .. })
    ));

    let plain = quiet(Config::builder()).build().unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &plain, &plain, link).unwrap();
    assert!(matches!(
        pair.a.send_oob(b"x"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        pair.b.set_oob_handler(|_| {}),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(pair.a.oob_max_size(), 0);
}

#[test]
fn close_sends_what_was_written_and_reports_closed() {
    let cfg = quiet(Config::builder().write_delay(true)).build().unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    let now = pair.now();
    pair.a.write(now, b"last words").unwrap();
    pair.a.close(now).unwrap();
    assert!(matches!(pair.a.close(now), Err(Error::Closed)));
    assert_eq!(
        pair.a.poll_event(),
        Some(Event::Closed(CloseReason::Closed))
    );
    assert_eq!(
        pair.a.poll_timeout(),
        None,
        "a closed connection has no timers"
    );
    assert!(pair.transmit(Side::A) > 0, "the final flush is sent");
    let mut buf = [0u8; 64];
    assert!(pair.run_until(1000, |p| p.b.is_readable()));
    assert_eq!(pair.b.read(&mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], b"last words");
    assert!(matches!(pair.a.write(now, b"more"), Err(Error::Closed)));
}

#[test]
fn events_announce_readable_and_writable_edges() {
    let cfg = quiet(Config::builder().window(4, 32)).build().unwrap();
    let link = Link::new(LinkConfig::perfect(20), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    let mss = 1400 - 24 - 100;
    let data = test_data(16 * mss, 1);
    let now = pair.now();
    let n = pair.a.write(now, &data).unwrap();
    assert!(n < data.len(), "the window of 4 takes part of it");
    assert!(matches!(
        pair.a.write(now, &data[n..]),
        Err(Error::WouldBlock)
    ));
    assert_eq!(pair.a.poll_event(), None);
    pair.transmit(Side::A);
    assert!(pair.run_until(1000, |p| p.b.is_readable()));
    assert_eq!(pair.b.poll_event(), Some(Event::Readable));
    assert_eq!(pair.b.poll_event(), None, "an edge is reported once");
    let mut buf = vec![0u8; 1 << 20];
    while pair.b.read(&mut buf).is_ok() {}
    pair.transmit(Side::B);
    assert!(pair.run_until(2000, |p| p.a.is_writable()));
    assert_eq!(pair.a.poll_event(), Some(Event::Writable));
}

#[test]
fn garbage_truncated_and_replayed_datagrams_are_dropped_and_counted() {
    let cfg = quiet(
        Config::builder()
            .crypt(aes())
            .fec(4, 2)
            .stream_mode(StreamMode::Message),
    )
    .build()
    .unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    let now = pair.now();
    pair.a.send_msg(now, b"exactly once").unwrap();
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = pair.a.poll_transmit(now, &mut buf) {
        wire.push(buf[..n].to_vec());
    }
    assert!(!wire.is_empty());
    let before = pair.b.stats();
    // Every prefix of a real datagram, and bytes that never were one.
    let mut fed = 0;
    for d in &wire {
        for cut in 0..d.len() {
            let mut t = d[..cut].to_vec();
            pair.b.handle_datagram(now, &mut t);
            fed += 1;
        }
    }
    for i in 0..200u32 {
        let mut junk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (j * 31 + i) as u8).collect();
        pair.b.handle_datagram(now, &mut junk);
        fed += 1;
    }
    let after = pair.b.stats();
    let dropped = (after.in_csum_errors - before.in_csum_errors)
        + (after.in_errs - before.in_errs)
        + (after.kcp_in_errors - before.kcp_in_errors);
    assert_eq!(dropped, fed, "every bad datagram is counted once");
    assert!(matches!(pair.b.recv_msg(&mut buf), Err(Error::WouldBlock)));
    // The real datagrams, three times over: one message.
    for _ in 0..3 {
        for d in &wire {
            let mut t = d.clone();
            pair.b.handle_datagram(now, &mut t);
        }
    }
    assert_eq!(pair.b.recv_msg(&mut buf).unwrap(), 12);
    assert_eq!(&buf[..12], b"exactly once");
    assert!(matches!(pair.b.recv_msg(&mut buf), Err(Error::WouldBlock)));
}

#[test]
fn an_idle_connection_without_idle_timeout_arms_no_timer() {
    let cfg = quiet(Config::builder()).build().unwrap();
    let link = Link::new(LinkConfig::perfect(5), 1);
    let mut pair = ConnectionPair::new(1, &cfg, &cfg, link).unwrap();
    assert_eq!(pair.a.poll_timeout(), None);
    let now = pair.now();
    pair.a.write(now, b"x").unwrap();
    assert!(pair.a.poll_timeout().is_some());
    pair.transmit(Side::A);
    // Delivered, acknowledged: both go quiet again.
    assert!(pair.run_until(10_000, |p| p.a.poll_timeout().is_none()
        && p.b.poll_timeout().is_none()
        && p.link.in_flight() == 0));
    assert!(pair.now_ms < 1000, "quiet after {} ms", pair.now_ms);
}

/// A receive window that filled and is reopened by a read costs one round
/// trip, not timer ticks: the reader's WINS (cmd 84) leaves at once and the
/// writer sends what the window held back as soon as it hears it. kcp-go
/// waits for the next `interval` tick on both ends, which made single-session
/// throughput bimodal whenever a reader fell a window behind.
#[test]
fn a_reopened_receive_window_resumes_the_writer_within_one_round_trip() {
    const DELAY_MS: u64 = 2;
    const WND: u32 = 32;
    // A long interval so a tick-driven resume cannot pass for an immediate one.
    let nodelay = kcp_session::NoDelay {
        interval: 200,
        ..kcp_session::Mode::Fast3.nodelay()
    };
    let cfg = quiet(
        Config::builder()
            .window(WND, WND)
            .nodelay(nodelay)
            .stream_mode(StreamMode::Stream),
    )
    .build()
    .unwrap();
    let link = Link::new(LinkConfig::perfect(DELAY_MS), 1);
    let mut pair = ConnectionPair::new(9, &cfg, &cfg, link).unwrap();
    let data = test_data(4 * WND as usize * 1400, 9);

    // A writes what it can; B does not read, so its queue fills the window.
    let mut sent = 0;
    pair.run_until(1_000, |p| {
        write_from_a(p, &data, &mut sent);
        false
    });
    assert!(sent < data.len(), "the window never closed");
    let mut buf = vec![0u8; 1 << 20];
    let held = pair.b.read(&mut buf).unwrap();
    assert!(
        held >= (WND as usize - 1) * 1300,
        "B held only {held} bytes"
    );

    // The read reopened the window: B's next drive is due now and sends a
    // datagram carrying a WINS, checked by its raw bytes (no crypt, no FEC:
    // the datagram is bare KCP; cmd is byte 4 of each 24-byte header).
    let t = pair.now_ms;
    let now = pair.now();
    assert!(
        pair.b.poll_timeout().is_some_and(|at| at <= now),
        "no drive asked for"
    );
    pair.b.handle_timeout(now);
    let mut dgram = vec![0u8; 2048];
    let mut tells = 0;
    while let Some(len) = pair.b.poll_transmit(now, &mut dgram) {
        let mut at = 0;
        while at + 24 <= len {
            let seg_len = u32::from_le_bytes(dgram[at + 20..at + 24].try_into().unwrap()) as usize;
            if dgram[at + 4] == 84 {
                tells += 1;
            }
            at += 24 + seg_len;
        }
        pair.link.send(Side::B, &dgram[..len], t);
    }
    assert_eq!(tells, 1, "the reopened window was not told at once");

    // The held-back data reaches B one round trip after the read.
    let mut got = buf[..held].to_vec();
    let arrived = pair.run_until(t + 2 * DELAY_MS + 1, |p| {
        read_into(&mut p.b, &mut buf, &mut got);
        got.len() > held
    });
    assert!(
        arrived,
        "no new data within one round trip of the read (at {} ms, read at {t})",
        pair.now_ms
    );

    // And the rest of the stream still arrives byte-exact.
    let done = pair.run_until(60_000, |p| {
        write_from_a(p, &data, &mut sent);
        read_into(&mut p.b, &mut buf, &mut got);
        p.transmit(Side::B);
        got.len() == data.len()
    });
    assert!(
        done && got == data,
        "{} of {} bytes, exact: {}",
        got.len(),
        data.len(),
        got == data
    );
}

/// A connection with no crypto and no FEC, so its datagrams are bare KCP
/// segments, created at `t0`.
fn bare(t0: std::time::Instant) -> Connection {
    let cfg = quiet(Config::builder()).build().unwrap();
    Connection::new(7, &cfg, t0).unwrap()
}

/// Every datagram `conn` has waiting, as `(cmd, ts)` of its first segment
/// (bare KCP: conv 0..4, cmd 4, ts 8..12).
fn first_segments(conn: &mut Connection, now: std::time::Instant) -> Vec<(u8, u32)> {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    while let Some(n) = conn.poll_transmit(now, &mut buf) {
        assert!(n >= 24, "a datagram shorter than a KCP header: {n}");
        out.push((buf[4], u32::from_le_bytes(buf[8..12].try_into().unwrap())));
    }
    out
}

#[test]
fn deadlines_fall_on_the_millisecond_clock_not_on_the_last_call() {
    // A deadline is the instant the KCP clock first reads it. Returning the
    // last call's time plus whole milliseconds fires up to 1 ms late.
    let t0 = std::time::Instant::now();
    for frac_us in [1u64, 300, 700, 999] {
        let mut c = bare(t0);
        let now = t0 + Duration::from_millis(10) + Duration::from_micros(frac_us);
        c.write(now, b"one segment").unwrap();
        assert!(!first_segments(&mut c, now).is_empty(), "the write is sent");
        let at = c.poll_timeout().expect("a segment is in flight");
        assert!(at > now, "{frac_us}: deadline {at:?} not after now");
        let off = at.duration_since(t0);
        assert_eq!(
            off.subsec_nanos() % 1_000_000,
            0,
            "{frac_us} us into a millisecond: deadline {off:?} after creation is off the ms clock"
        );
    }
}

#[test]
fn the_clock_never_runs_backward() {
    // A shell may run a timer at its deadline a little before the wall
    // clock reaches it; a write just after must not carry an older ts.
    let t0 = std::time::Instant::now();
    let mut c = bare(t0);
    c.handle_timeout(t0 + Duration::from_millis(20));
    let _ = first_segments(&mut c, t0 + Duration::from_millis(20));
    let earlier = t0 + Duration::from_micros(19_400);
    c.write(earlier, b"after the timer").unwrap();
    let segs = first_segments(&mut c, earlier);
    let push = segs
        .iter()
        .find(|(cmd, _)| *cmd == kcp_session::kcp::IKCP_CMD_PUSH)
        .expect("the write is sent as a PUSH");
    assert_eq!(push.1, 20, "ts of a segment sent after the 20 ms timer");
}

/// The PUSH segments of bare KCP datagrams, as `(sn, payload)`, parsed from
/// the raw bytes (conv 0..4, cmd 4, sn 12..16, len 20..24, then the data).
fn push_segments(datagrams: &[Vec<u8>]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for d in datagrams {
        let mut rest = &d[..];
        while rest.len() >= 24 {
            let sn = u32::from_le_bytes(rest[12..16].try_into().unwrap());
            let len = u32::from_le_bytes(rest[20..24].try_into().unwrap()) as usize;
            assert!(rest.len() >= 24 + len, "a segment longer than its datagram");
            if rest[4] == kcp_session::kcp::IKCP_CMD_PUSH {
                out.push((sn, rest[24..24 + len].to_vec()));
            }
            rest = &rest[24 + len..];
        }
        assert!(rest.is_empty(), "trailing bytes after the last segment");
    }
    out
}

#[test]
fn writes_behind_unsent_datagrams_fill_whole_segments() {
    // A write flushes at once (kcp-go's Write), but one that finds the last
    // flush's datagrams still unsent joins them in the same send: its bytes
    // wait in the stream queue and go out in full segments, not one short
    // segment per write (which also breaks GSO runs).
    let t0 = std::time::Instant::now();
    // fast3: no congestion window, so the 32-segment initial peer window
    // is all that limits the send.
    let cfg = quiet(
        Config::builder()
            .mode(kcp_session::Mode::Fast3)
            .stream_mode(StreamMode::Stream),
    )
    .build()
    .unwrap();
    let mut c = Connection::new(7, &cfg, t0).unwrap();
    let data = test_data(10_000, 3);
    let now = t0 + Duration::from_millis(1);
    for piece in data.chunks(1000) {
        assert_eq!(c.write(now, piece).unwrap(), piece.len());
    }
    assert_eq!(c.poll_timeout(), Some(now), "the rest is due at once");
    let mut buf = vec![0u8; 2048];
    let mut wire = Vec::new();
    loop {
        while let Some(n) = c.poll_transmit(now, &mut buf) {
            wire.push(buf[..n].to_vec());
        }
        if c.poll_timeout() != Some(now) {
            break;
        }
        c.handle_timeout(now);
    }
    let segs = push_segments(&wire);
    let sent: Vec<u8> = segs.iter().flat_map(|(_, p)| p.clone()).collect();
    assert!(
        sent == data,
        "the segments carry the written bytes in order"
    );
    let sns: Vec<u32> = segs.iter().map(|(sn, _)| *sn).collect();
    assert_eq!(sns, (0..segs.len() as u32).collect::<Vec<_>>());
    let mss = 1400 - 24;
    let lens: Vec<usize> = segs.iter().map(|(_, p)| p.len()).collect();
    assert_eq!(lens[0], 1000, "the first write is sent as it is");
    for &l in &lens[1..lens.len() - 1] {
        assert_eq!(l, mss, "segment lengths {lens:?}");
    }
}

#[test]
fn the_first_acks_go_at_once_so_a_new_sender_leaves_its_initial_window() {
    // A dialer assumes kcp-go's initial peer window (32 segments) until a
    // segment from the peer says otherwise. Held for the receiver's next
    // tick (fewer than the mtu/24 ACKs that clock an ACK-only flush), the
    // first ACKs would idle the link for up to an interval.
    const DELAY_MS: u64 = 5;
    let cfg = quiet(
        Config::builder()
            .mode(kcp_session::Mode::Fast3)
            .window(1024, 1024)
            .stream_mode(StreamMode::Stream),
    )
    .build()
    .unwrap();
    let link = Link::new(LinkConfig::perfect(DELAY_MS), 1);
    let mut pair = ConnectionPair::new(5, &cfg, &cfg, link).unwrap();
    // 40 segments: 32 in the first flight, the rest once B's window is heard.
    let data = test_data(40 * 1376, 5);
    let (got, at) = stream_a_to_b(&mut pair, &data, 1000);
    assert!(got == data);
    // Two one-way trips for the first flight and its ACK, one for the rest.
    assert_eq!(at, 3 * DELAY_MS, "last byte arrived at {at} ms");
}
