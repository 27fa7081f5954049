//! FEC: a real encoder feeds the decoder through a faulty channel (loss,
//! duplication, reordering, delay, the 500 ms parity rule) driven by the
//! input. Everything the decoder delivers, as received or rebuilt, must be
//! exactly a packet that was sent; a lossless in-order channel loses nothing.

#![no_main]

use std::collections::{HashSet, VecDeque};

use fuzz_util::{payload, Input};
use kcp_session::fec::{paws, FecDecoder, FecEncoder, FEC_HEADER_SIZE_PLUS2, MAX_SHARD_LEN};
use kcp_session::kcp::PacketKind;
use libfuzzer_sys::fuzz_target;

fn deliver(
    dec: &mut FecDecoder,
    pkt: &[u8],
    sent: &HashSet<Vec<u8>>,
    delivered: &mut Vec<Vec<u8>>,
) {
    dec.decode(pkt, &mut |bytes: &[u8], kind: PacketKind| {
        assert!(
            sent.contains(bytes),
            "decoder delivered {} bytes ({kind:?}) that were never sent",
            bytes.len()
        );
        delivered.push(bytes.to_vec());
    })
    .expect("a well-formed FEC packet is never an error");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let d = 1 + input.below(12);
    let p = 1 + input.below(5);
    let mut enc = FecEncoder::new(d, p).expect("valid shard counts");
    let mut dec = FecDecoder::new(d, p).expect("valid shard counts");
    if input.u8() & 1 == 1 {
        // Start anywhere in the seqid space, e.g. just before the wrap, and
        // anywhere in a group: kcp-go's encoder is always aligned, but a
        // peer that is not makes the decoder auto-tune and meet sets rebuilt
        // with a guessed layout, which must never deliver wrong bytes
        // (issue 12 item 2).
        let s = (d + p) as u32;
        enc.set_next_seqid(input.u32() % paws(s));
    }
    let mut sent: HashSet<Vec<u8>> = HashSet::new();
    let mut wire: VecDeque<Vec<u8>> = VecDeque::new();
    let mut now: u32 = input.u32();
    let mut tag = 0u32;
    let mut lossless = true;
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 1500];

    while !input.is_empty() {
        match input.u8() % 10 {
            // Send one KCP datagram (and the group's parity when ready).
            0..=3 => {
                let len = 4 + input.below(MAX_SHARD_LEN - 2 - 4 + 1);
                let kcp = payload(tag, len);
                tag += 1;
                buf[FEC_HEADER_SIZE_PLUS2..FEC_HEADER_SIZE_PLUS2 + len].copy_from_slice(&kcp);
                let ready = enc.encode(&mut buf, len, now).expect("fits");
                wire.push_back(buf[..FEC_HEADER_SIZE_PLUS2 + len].to_vec());
                sent.insert(kcp);
                for i in 0..ready {
                    let n = enc.take_parity(i, &mut buf).expect("ready");
                    wire.push_back(buf[..n].to_vec());
                }
            }
            4 => {
                if let Some(pkt) = wire.pop_front() {
                    deliver(&mut dec, &pkt, &sent, &mut delivered);
                }
            }
            5 => {
                if wire.pop_front().is_some() {
                    lossless = false;
                }
            }
            6 => {
                if let Some(pkt) = wire.front().cloned() {
                    deliver(&mut dec, &pkt, &sent, &mut delivered);
                }
            }
            7 => {
                // Reorder: swap the head with a later packet.
                let j = input.below(16);
                if j < wire.len() {
                    wire.swap(0, j);
                    lossless = false;
                }
            }
            8 => now = now.wrapping_add(input.u16() as u32),
            _ => {
                // Deliver a later packet first (delay the head).
                let j = input.below(16);
                if j < wire.len() {
                    if let Some(pkt) = wire.remove(j) {
                        deliver(&mut dec, &pkt, &sent, &mut delivered);
                    }
                    lossless = false;
                }
            }
        }
    }
    while let Some(pkt) = wire.pop_front() {
        deliver(&mut dec, &pkt, &sent, &mut delivered);
    }
    if lossless {
        // In order, nothing lost (duplicates allowed): every packet arrives.
        let got: HashSet<&Vec<u8>> = delivered.iter().collect();
        assert_eq!(got.len(), sent.len(), "lossless channel lost packets");
    }
});
