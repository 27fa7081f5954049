//! KCP: two engines joined by a channel the input drives (loss, duplication,
//! reordering, clock steps), with send/recv/update/flush interleaved and
//! hostile segments injected. While nothing forged has been accepted, the
//! receiver delivers exactly a prefix of what was sent (stream mode) or
//! whole messages in order (message mode); its buffers stay inside the
//! receive window whatever arrives.

#![no_main]

use std::collections::VecDeque;

use fuzz_util::{payload, Input};
use kcp_session::kcp::{FlushKind, Kcp, PacketKind, IKCP_OVERHEAD};
use libfuzzer_sys::fuzz_target;

const CONV: u32 = 0x0102_0304;

fn engine(input: &mut Input, stream: bool) -> Kcp {
    let mut k = Kcp::new(CONV);
    let nodelay = input.u8();
    k.set_nodelay(
        (nodelay & 1) as i32,
        10 + (nodelay >> 1) as i32 * 2,
        (input.u8() % 4) as i32,
        (nodelay >> 7) as i32,
    );
    k.set_wndsize(1 + input.below(128) as u32, 1 + input.below(128) as u32);
    let mtu = 50 + input.below(1450);
    k.set_mtu(mtu).expect("mtu in range");
    k.set_stream_mode(stream);
    k
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let stream = input.u8() & 1 == 1;
    let ack_nodelay = input.u8() & 1 == 1;
    let mut a = engine(&mut input, stream);
    let mut b = engine(&mut input, stream);
    let mut now: u32 = input.u32();
    let mut a_to_b: VecDeque<Vec<u8>> = VecDeque::new();
    let mut b_to_a: VecDeque<Vec<u8>> = VecDeque::new();
    // What A sent, as a byte stream, and the message boundaries.
    let mut sent: Vec<u8> = Vec::new();
    let mut messages: VecDeque<Vec<u8>> = VecDeque::new();
    let mut received = 0usize;
    let mut forged = false;
    let mut tag = 0u32;
    let mut rbuf = vec![0u8; 8 * 1500];

    while !input.is_empty() {
        match input.u8() % 14 {
            0 | 1 => {
                let len = 1 + input.below(4 * a.mss()).min(rbuf.len() - 1);
                let msg = payload(tag, len);
                tag += 1;
                if a.send(&msg[..len]).is_ok() {
                    sent.extend_from_slice(&msg[..len]);
                    messages.push_back(msg[..len].to_vec());
                }
            }
            2 => {
                let cap = 1 + input.below(rbuf.len());
                match b.recv(&mut rbuf[..cap]) {
                    Ok(Some(n)) => {
                        assert!(n <= cap);
                        if !forged {
                            let got = &rbuf[..n];
                            if stream {
                                assert_eq!(got, &sent[received..received + n], "stream corrupted");
                            } else {
                                let want = messages.pop_front().expect("a message was sent");
                                assert_eq!(got, &want[..], "message corrupted");
                            }
                        }
                        received += n;
                    }
                    Ok(None) => {}
                    Err(_) => {
                        // A message larger than `cap`: it stays queued.
                        assert!(b.peek_size().is_some_and(|s| s > cap));
                    }
                }
            }
            3 => {
                a.update(now, &mut |d: &[u8]| a_to_b.push_back(d.to_vec()));
            }
            4 => {
                b.update(now, &mut |d: &[u8]| b_to_a.push_back(d.to_vec()));
            }
            5 => now = now.wrapping_add(input.u16() as u32 % 4000),
            6 => {
                if let Some(d) = a_to_b.pop_front() {
                    let _ = b.input(
                        &d,
                        PacketKind::Regular,
                        ack_nodelay,
                        now,
                        &mut |d: &[u8]| b_to_a.push_back(d.to_vec()),
                    );
                }
            }
            7 => {
                if let Some(d) = b_to_a.pop_front() {
                    let _ = a.input(
                        &d,
                        PacketKind::Regular,
                        ack_nodelay,
                        now,
                        &mut |d: &[u8]| a_to_b.push_back(d.to_vec()),
                    );
                }
            }
            8 => {
                a_to_b.pop_front();
            }
            9 => {
                if let Some(d) = a_to_b.front().cloned() {
                    a_to_b.push_back(d);
                }
                let j = input.below(8);
                if j < a_to_b.len() {
                    a_to_b.swap(0, j);
                }
            }
            10 => {
                b_to_a.pop_front();
            }
            11 => {
                // A forged datagram for B; with the right conv half the time.
                let mut d = input.chunk(8, 1500).to_vec();
                let kind = if input.u8() & 1 == 0 {
                    PacketKind::Regular
                } else {
                    PacketKind::Recovered
                };
                if d.len() >= 4 && input.u8() & 1 == 0 {
                    d[..4].copy_from_slice(&CONV.to_le_bytes());
                }
                if d.len() >= IKCP_OVERHEAD {
                    forged = true;
                }
                let _ = b.input(&d, kind, ack_nodelay, now, &mut |d: &[u8]| {
                    b_to_a.push_back(d.to_vec())
                });
            }
            12 => {
                let kind = if input.u8() & 1 == 0 {
                    FlushKind::AckOnly
                } else {
                    FlushKind::Full
                };
                a.flush(kind, now, &mut |d: &[u8]| a_to_b.push_back(d.to_vec()));
            }
            _ => {
                // A forged datagram for A (it cannot make B deliver wrong bytes
                // by itself, but it can confuse A's send state).
                let mut d = input.chunk(8, 1500).to_vec();
                if d.len() >= 4 {
                    d[..4].copy_from_slice(&CONV.to_le_bytes());
                }
                let _ = a.input(
                    &d,
                    PacketKind::Regular,
                    ack_nodelay,
                    now,
                    &mut |d: &[u8]| a_to_b.push_back(d.to_vec()),
                );
            }
        }
        // A KCP output datagram never exceeds the mtu.
        for d in a_to_b.iter().chain(b_to_a.iter()) {
            assert!(d.len() <= 1500);
        }
        assert!(
            b.rcv_buf_len() <= b.rcv_wnd() as usize,
            "rcv_buf beyond the window"
        );
        assert!(
            b.rcv_queue_len() <= b.rcv_wnd() as usize + 255,
            "rcv_queue unbounded"
        );
        // Keep the channel bounded so one input cannot take minutes.
        a_to_b.truncate(4096);
        b_to_a.truncate(4096);
    }
});
