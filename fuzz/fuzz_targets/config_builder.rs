//! The config builder: any sequence of setters either builds a `Config` or
//! returns a typed error, never panics; a built `Config` validates, survives
//! `to_builder().build()`, and every component a session makes from it
//! (KCP engine, sealer, FEC encoder and decoder, receiver) can be created,
//! with a full-mtu datagram fitting in kcp-go's 1500-byte receive buffer.

#![no_main]

use std::time::Duration;

use fuzz_util::Input;
use kcp_session::codec::{Receiver, Sealer};
use kcp_session::crypt::CipherKind;
use kcp_session::fec::{FecDecoder, FecEncoder};
use kcp_session::kcp::Kcp;
use kcp_session::{Config, Congestion, Error, Mode, NoDelay, StreamMode};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "aes", "aes-128", "salsa20", "xor", "none", "null", "sm4", "bogus",
];

/// Mostly small, sometimes anywhere in range.
fn size(input: &mut Input, small: usize) -> usize {
    match input.u8() % 4 {
        0 => input.u32() as usize,
        _ => input.below(small),
    }
}

fn duration(input: &mut Input) -> Option<Duration> {
    match input.u8() % 3 {
        0 => None,
        1 => Some(Duration::ZERO),
        _ => Some(Duration::from_millis(input.u32() as u64)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut b = Config::builder();
    while !input.is_empty() {
        b = match input.u8() % 20 {
            0 => {
                let kind = CipherKind::ALL[input.below(CipherKind::ALL.len())];
                let key = input.chunk(1, 64).to_vec();
                b.cipher(kind, &key)
            }
            1 => {
                // kcptun's PBKDF2 takes milliseconds: only now and then.
                if input.u8() == 0x5a {
                    b.crypt_kcptun(NAMES[input.below(NAMES.len())], "fuzz")
                } else {
                    b
                }
            }
            // Shard counts stay below 2^32 each: usize::MAX-sized counts are
            // issue 12 item 4 (config overflow), fixed on its own branch.
            2 => b.fec(size(&mut input, 300), size(&mut input, 300)),
            3 => b.mtu(size(&mut input, 1600)),
            4 => b.window(input.u32() % 70_000, input.u32() % 70_000),
            5 => b.nodelay(NoDelay {
                nodelay: input.u8() & 1 == 1,
                interval: input.u32() % 6000,
                resend: input.u32() % 8,
                congestion: if input.u8() & 1 == 1 {
                    Congestion::On
                } else {
                    Congestion::Off
                },
            }),
            6 => b.mode([Mode::Normal, Mode::Fast, Mode::Fast2, Mode::Fast3][input.below(4)]),
            7 => b.stream_mode(if input.u8() & 1 == 1 {
                StreamMode::Stream
            } else {
                StreamMode::Message
            }),
            8 => b.write_delay(input.u8() & 1 == 1),
            9 => b.ack_nodelay(input.u8() & 1 == 1),
            10 => b.dscp(input.u8()),
            11 => b.socket_buffers(size(&mut input, 1 << 24)),
            12 => b.recv_buffer(size(&mut input, 1 << 24)),
            13 => b.send_buffer(size(&mut input, 1 << 24)),
            14 => b.rate_limit(input.u32()),
            15 => b.idle_timeout(duration(&mut input)),
            16 => b.dead_link(if input.u8() & 1 == 0 {
                None
            } else {
                Some(input.u32() % 100)
            }),
            17 => b.read_timeout(duration(&mut input)),
            18 => b.write_timeout(duration(&mut input)),
            _ => {
                if input.u8() & 1 == 0 {
                    b.accept_backlog(size(&mut input, 5000))
                } else {
                    b.max_sessions(if input.u8() & 1 == 0 {
                        None
                    } else {
                        Some(size(&mut input, 5000))
                    })
                }
            }
        };
    }
    let config = match b.build() {
        Ok(c) => c,
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::InvalidConfig(_)
                        | Error::InvalidKey { .. }
                        | Error::UnknownCipher { .. }
                        | Error::MtuTooLarge { .. }
                ),
                "build failed with an unexpected error kind: {e:?}"
            );
            return;
        }
    };
    config.validate().expect("a built config validates");
    let again = config.to_builder().build().expect("rebuilds");
    assert_eq!(format!("{again:?}"), format!("{config:?}"));

    // What a session makes from it.
    let mut kcp = Kcp::new(1);
    kcp.set_mtu(config.kcp_mtu()).expect("kcp mtu valid");
    let (snd, rcv) = config.window();
    kcp.set_wndsize(snd, rcv);
    let (d, p) = config.fec();
    Sealer::new(config.crypt().clone(), d, p).expect("sealer");
    let _ = Receiver::new(d, p);
    if config.fec_enabled() {
        FecEncoder::new(d, p).expect("encoder for a valid config");
        FecDecoder::new(d, p).expect("decoder for a valid config");
    }
    assert!(
        config.header_len() + config.kcp_mtu() + config.crypt().trailer_len() <= 1500,
        "a full datagram exceeds kcp-go's 1500-byte buffer"
    );
    assert!(config.kcp_mtu() <= config.mtu());
});
