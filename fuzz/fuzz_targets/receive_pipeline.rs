//! The whole receive pipeline as the listener runs it: crypt open -> demux
//! -> session by conv -> FEC decoder -> KCP, fed by a real sender (KCP ->
//! FEC encoder -> seal) over a channel the input drives (loss, duplication,
//! reordering, bit flips, forged datagrams). Nothing panics; while no
//! tampered datagram has opened (only `null` lets one through), the
//! receiver's stream is exactly a prefix of the sender's.

#![no_main]

use std::collections::VecDeque;
use std::sync::OnceLock;

use fuzz_util::{payload, Input};
use kcp_session::codec::{self, Demux, PacketType, Receiver, MIN_PLAINTEXT};
use kcp_session::crypt::{CipherKind, Crypt};
use kcp_session::fec::{FecEncoder, FEC_HEADER_SIZE_PLUS2};
use kcp_session::kcp::Kcp;
use kcp_session::stats::Counters;
use libfuzzer_sys::fuzz_target;

const KINDS: [CipherKind; 6] = [
    CipherKind::AesGcm,
    CipherKind::Aes128,
    CipherKind::Salsa20,
    CipherKind::Xor,
    CipherKind::None,
    CipherKind::Null,
];

/// One end's send path: KCP datagrams -> optional FEC -> sealed datagrams.
struct Sender {
    crypt: Crypt,
    fec: Option<FecEncoder>,
}

impl Sender {
    fn seal(&mut self, kcp: &[u8], now: u32, wire: &mut VecDeque<Vec<u8>>) {
        let h = self.crypt.header_len();
        let f = if self.fec.is_some() {
            FEC_HEADER_SIZE_PLUS2
        } else {
            0
        };
        let mut buf = vec![0u8; 1500 + 64];
        if h + f + kcp.len() + self.crypt.trailer_len() > buf.len() {
            return;
        }
        buf[h + f..h + f + kcp.len()].copy_from_slice(kcp);
        let mut parity = 0;
        let plain = match &mut self.fec {
            Some(enc) => {
                parity = enc.encode(&mut buf[h..], kcp.len(), now).expect("fits");
                f + kcp.len()
            }
            None => kcp.len(),
        };
        let n = self.crypt.seal(&mut buf, plain).expect("seal");
        wire.push_back(buf[..n].to_vec());
        for i in 0..parity {
            let mut q = vec![0u8; 1500 + 64];
            let enc = self.fec.as_ref().expect("fec");
            let len = enc.take_parity(i, &mut q[h..]).expect("ready");
            let n = self.crypt.seal(&mut q, len).expect("seal");
            wire.push_back(q[..n].to_vec());
        }
    }
}

/// The accepting end: the listener's checks, one session.
struct Accepting {
    crypt: Crypt,
    shards: (usize, usize),
    session: Option<(Kcp, Receiver)>,
    c: Counters,
    mtu: usize,
}

impl Accepting {
    /// kcp-go `Listener.packetInput` + `kcp.input` for one datagram; KCP
    /// output (ACKs) goes to `out`. True if the datagram opened.
    fn input(&mut self, d: &mut [u8], now: u32, out: &mut Vec<Vec<u8>>) -> bool {
        let Some(range) = codec::open_counted(&self.crypt, d, &mut self.c) else {
            return false;
        };
        let plain = &d[range];
        if plain.len() < MIN_PLAINTEXT {
            return true;
        }
        let dm = codec::demux(plain);
        if dm == Demux::Drop {
            return true;
        }
        let mut sink = |b: &[u8]| out.push(b.to_vec());
        if let Some((kcp, rx)) = &mut self.session {
            match dm {
                Demux::Conv(ci) if ci.conv != kcp.conv() => {
                    if ci.sn != 0 {
                        return true;
                    }
                    self.session = None;
                }
                _ => {
                    rx.input(plain, kcp, false, now, &mut sink, &mut self.c, &mut |_| {});
                    return true;
                }
            }
        }
        let Demux::Conv(ci) = dm else { return true };
        let mut kcp = Kcp::new(ci.conv);
        kcp.set_mtu(self.mtu).expect("mtu");
        let mut rx = Receiver::new(self.shards.0, self.shards.1);
        let rep = rx.input(
            plain,
            &mut kcp,
            false,
            now,
            &mut sink,
            &mut self.c,
            &mut |_| {},
        );
        if rep.kcp_ok > 0 || codec::classify(plain) == PacketType::Oob {
            self.session = Some((kcp, rx));
        }
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = input.below(KINDS.len());
    // PBKDF2 (kcptun key, XOR pad) costs milliseconds: build each once.
    static CRYPTS: OnceLock<Vec<Crypt>> = OnceLock::new();
    let crypt = CRYPTS.get_or_init(|| {
        let key = Crypt::kcptun_key("fuzz");
        KINDS
            .iter()
            .map(|k| Crypt::new(*k, &key[..k.kcptun_key_len()]).expect("key"))
            .collect()
    })[kind]
        .clone();
    let shards = match input.u8() % 3 {
        0 => (0, 0),
        _ => (1 + input.below(10), 1 + input.below(4)),
    };
    let fec = |(d, p): (usize, usize)| (d > 0).then(|| FecEncoder::new(d, p).expect("shards"));
    let overhead = crypt.overhead()
        + if shards.0 > 0 {
            FEC_HEADER_SIZE_PLUS2
        } else {
            0
        };
    let mtu = 1400 - overhead;
    let conv = input.u32();
    let mut a = Kcp::new(conv);
    a.set_mtu(mtu).expect("mtu");
    a.set_nodelay(1, 10, 2, 1);
    let stream = input.u8() & 1 == 1;
    a.set_stream_mode(stream);
    let mut a_tx = Sender {
        crypt: crypt.clone(),
        fec: fec(shards),
    };
    let mut b = Accepting {
        crypt: crypt.clone(),
        shards,
        session: None,
        c: Counters::default(),
        mtu,
    };
    let mut b_tx = Sender {
        crypt: crypt.clone(),
        fec: fec(shards),
    };
    let mut a_rx = Receiver::new(shards.0, shards.1);
    let mut a_c = Counters::default();

    let mut now: u32 = input.u32();
    let mut up: VecDeque<Vec<u8>> = VecDeque::new();
    let mut down: VecDeque<Vec<u8>> = VecDeque::new();
    let mut sent: Vec<u8> = Vec::new();
    let mut messages: VecDeque<Vec<u8>> = VecDeque::new();
    let mut received = 0usize;
    let mut tampered = false;
    let mut tag = 0u32;
    let mut rbuf = vec![0u8; 16 * 1400];
    let mut kcp_out: Vec<Vec<u8>> = Vec::new();

    while !input.is_empty() {
        match input.u8() % 12 {
            0 | 1 => {
                let len = 1 + input.below(3 * a.mss());
                let msg = payload(tag, len);
                tag += 1;
                if a.send(&msg[..len]).is_ok() {
                    sent.extend_from_slice(&msg[..len]);
                    messages.push_back(msg[..len].to_vec());
                }
            }
            2 => {
                a.update(now, &mut |d: &[u8]| kcp_out.push(d.to_vec()));
                for d in kcp_out.drain(..) {
                    a_tx.seal(&d, now, &mut up);
                }
            }
            3 => {
                // Deliver upstream: the listener's path.
                if let Some(mut d) = up.pop_front() {
                    b.input(&mut d, now, &mut kcp_out);
                    for d in kcp_out.drain(..) {
                        b_tx.seal(&d, now, &mut down);
                    }
                }
            }
            4 => {
                up.pop_front();
            }
            5 => {
                // Duplicate or reorder upstream.
                let j = input.below(8);
                if let Some(d) = up.front().cloned() {
                    up.push_back(d);
                }
                if j < up.len() {
                    up.swap(0, j);
                }
            }
            6 => {
                // Flip a bit of an upstream datagram, then deliver it.
                if let Some(mut d) = up.pop_front() {
                    let orig = d.clone();
                    if !d.is_empty() {
                        let pos = input.u16() as usize % d.len();
                        d[pos] ^= 1 << (input.u8() % 8);
                    }
                    if b.input(&mut d, now, &mut kcp_out) && d != orig {
                        tampered = true;
                    }
                    kcp_out.clear();
                }
            }
            7 => {
                // A forged datagram.
                let mut d = input.chunk(8, 1600).to_vec();
                if b.input(&mut d, now, &mut kcp_out) {
                    tampered = true;
                }
                kcp_out.clear();
            }
            8 => {
                // Downstream (ACKs) back to the sender, its own receive path.
                if let Some(mut d) = down.pop_front() {
                    if let Some(range) = codec::open_counted(&crypt, &mut d, &mut a_c) {
                        a_rx.input(
                            &d[range],
                            &mut a,
                            false,
                            now,
                            &mut |d: &[u8]| kcp_out.push(d.to_vec()),
                            &mut a_c,
                            &mut |_| {},
                        );
                    }
                    kcp_out.clear();
                }
            }
            9 => {
                down.pop_front();
            }
            10 => now = now.wrapping_add(input.u16() as u32 % 2000),
            _ => {
                let Some((kcp, _)) = &mut b.session else {
                    continue;
                };
                kcp.update(now, &mut |d: &[u8]| kcp_out.push(d.to_vec()));
                for d in kcp_out.drain(..) {
                    b_tx.seal(&d, now, &mut down);
                }
                let cap = 1 + input.below(rbuf.len());
                if let Ok(Some(n)) = kcp.recv(&mut rbuf[..cap]) {
                    if !tampered {
                        assert_eq!(kcp.conv(), conv, "session for a conv nobody sent");
                        if stream {
                            assert_eq!(
                                &rbuf[..n],
                                &sent[received..received + n],
                                "stream corrupted"
                            );
                        } else {
                            let want = messages.pop_front().expect("a message was sent");
                            assert_eq!(&rbuf[..n], &want[..], "message corrupted");
                        }
                    }
                    received += n;
                }
            }
        }
        up.truncate(2048);
        down.truncate(2048);
    }
});
