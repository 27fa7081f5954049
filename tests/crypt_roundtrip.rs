//! Round trips for every cipher, robustness of `open` against hostile input,
//! and the API's argument checks.

use kcp_session::crypt::{
    Backend, CipherKind, Crypt, AEAD_TAG_SIZE, CRYPT_HEADER_SIZE, NONCE_SIZE,
};
use kcp_session::Error;
use proptest::prelude::*;

fn crypt_for(kind: CipherKind) -> Crypt {
    let key = Crypt::kcptun_key("round trip");
    Crypt::new(kind, &key[..kind.kcptun_key_len()]).expect("kcptun key lengths are valid")
}

fn kinds() -> impl Strategy<Value = CipherKind> {
    proptest::sample::select(CipherKind::ALL.to_vec())
}

fn is_drop_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Truncated(_) | Error::Checksum | Error::Authentication
    )
}

fn sealed(kind: CipherKind, payload: &[u8]) -> (Crypt, Vec<u8>) {
    let mut c = crypt_for(kind);
    let mut buf = vec![0u8; payload.len() + c.overhead()];
    let h = c.header_len();
    buf[h..h + payload.len()].copy_from_slice(payload);
    let n = c.seal(&mut buf, payload.len()).expect("seal");
    assert_eq!(n, buf.len());
    (c, buf)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trip(kind in kinds(), payload in proptest::collection::vec(any::<u8>(), 0..1480)) {
        let (c, mut dgram) = sealed(kind, &payload);
        let range = c.open(&mut dgram).expect("open own datagram");
        prop_assert_eq!(&dgram[range], &payload[..]);
    }

    /// A datagram sealed by one backend opens with the others, and the
    /// same nonce gives the same bytes under every backend.
    #[test]
    fn backends_interoperate(kind in kinds(), payload in proptest::collection::vec(any::<u8>(), 0..1480), nonce in any::<[u8; 16]>()) {
        let key = Crypt::kcptun_key("round trip");
        let key = &key[..kind.kcptun_key_len()];
        let backends = [Backend::Fastest, Backend::Sse, Backend::Portable];
        let crypts = backends.map(|b| Crypt::with_backend(kind, key, b).expect("key"));
        let nonce = &nonce[..kind.nonce_len()];
        let mut sealed = Vec::new();
        for c in &crypts {
            let mut buf = vec![0u8; payload.len() + c.overhead()];
            let h = c.header_len();
            buf[h..h + payload.len()].copy_from_slice(&payload);
            let n = c.seal_with_nonce(&mut buf, payload.len(), nonce).expect("seal");
            prop_assert_eq!(n, buf.len());
            sealed.push(buf);
        }
        prop_assert_eq!(&sealed[0], &sealed[1], "Fastest and Sse differ");
        prop_assert_eq!(&sealed[0], &sealed[2], "Fastest and Portable differ");
        for c in &crypts {
            let mut buf = sealed[0].clone();
            let range = c.open(&mut buf).expect("every backend opens the others' datagrams");
            prop_assert_eq!(&buf[range], &payload[..]);
        }
    }

    #[test]
    fn raw_stream_round_trip(kind in kinds(), data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        prop_assume!(!kind.is_aead());
        let c = crypt_for(kind);
        let mut buf = data.clone();
        c.encrypt_raw(&mut buf).expect("raw");
        c.decrypt_raw(&mut buf).expect("raw");
        prop_assert_eq!(buf, data);
    }

    #[test]
    fn open_garbage_never_panics(kind in kinds(), mut data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let c = crypt_for(kind);
        match c.open(&mut data) {
            Ok(range) => {
                prop_assert!(range.end <= data.len());
                // Only the header-less mode accepts arbitrary bytes; for the
                // rest a 32-bit CRC or a GCM tag must have matched by chance.
                prop_assert!(kind == CipherKind::Null || kind == CipherKind::None,
                    "{kind} accepted random bytes");
            }
            Err(e) => prop_assert!(is_drop_error(&e), "{kind}: untyped error {e:?}"),
        }
    }

    #[test]
    fn open_truncated_fails(kind in kinds(), payload in proptest::collection::vec(any::<u8>(), 1..1400), cut in any::<prop::sample::Index>()) {
        prop_assume!(kind != CipherKind::Null);
        let (c, mut dgram) = sealed(kind, &payload);
        let keep = cut.index(dgram.len());
        let err = c.open(&mut dgram[..keep]).expect_err("truncated datagram accepted");
        prop_assert!(is_drop_error(&err));
        let min = kind.header_len() + kind.trailer_len();
        if keep < min {
            prop_assert!(matches!(err, Error::Truncated(_)));
        }
    }

    #[test]
    fn open_bit_flip_fails(kind in kinds(), payload in proptest::collection::vec(any::<u8>(), 1..1400), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        prop_assume!(kind != CipherKind::Null);
        let (c, mut dgram) = sealed(kind, &payload);
        // The CRC does not cover the non-AEAD nonce (§1.3), so a flip there can
        // legitimately go unnoticed; AEAD authenticates every byte.
        let first = if kind.is_aead() { 0 } else { NONCE_SIZE };
        let i = first + at.index(dgram.len() - first);
        dgram[i] ^= 1 << bit;
        let err = c.open(&mut dgram).expect_err("tampered datagram accepted");
        if kind.is_aead() {
            prop_assert!(matches!(err, Error::Authentication));
        } else {
            prop_assert!(matches!(err, Error::Checksum));
        }
    }
}

#[test]
fn header_and_trailer_lengths() {
    for kind in CipherKind::ALL {
        let c = crypt_for(kind);
        let (h, t) = match kind {
            CipherKind::Null => (0, 0),
            CipherKind::AesGcm => (12, AEAD_TAG_SIZE),
            _ => (CRYPT_HEADER_SIZE, 0),
        };
        assert_eq!((c.header_len(), c.trailer_len()), (h, t), "{kind}");
    }
}

#[test]
fn names_parse_and_unknown_names_are_rejected() {
    for kind in CipherKind::ALL {
        assert_eq!(kind.name().parse::<CipherKind>().expect("own name"), kind);
    }
    assert_eq!(
        "aes".parse::<CipherKind>().expect("aes"),
        CipherKind::Aes256
    );
    match Crypt::from_kcptun("aes-256-cfb", "k") {
        Err(Error::UnknownCipher { name, valid }) => {
            assert_eq!(name, "aes-256-cfb");
            for kind in CipherKind::ALL {
                assert!(valid.contains(kind.name()), "{valid} lacks {kind}");
            }
        }
        other => panic!("expected UnknownCipher, got {other:?}"),
    }
}

#[test]
fn key_lengths_follow_go_constructors() {
    let ok: &[(CipherKind, &[usize])] = &[
        (CipherKind::Aes128, &[16]),
        (CipherKind::Aes192, &[24]),
        (CipherKind::Aes256, &[32]),
        (CipherKind::AesGcm, &[16, 24, 32]),
        (CipherKind::Twofish, &[16, 24, 32]),
        (CipherKind::Cast5, &[16]),
        (CipherKind::TripleDes, &[24]),
        (CipherKind::Tea, &[16]),
        (CipherKind::Xtea, &[16]),
        (CipherKind::Sm4, &[16]),
    ];
    let key = [7u8; 64];
    for (kind, lens) in ok {
        for len in 0..=64 {
            let r = Crypt::new(*kind, &key[..len]);
            if lens.contains(&len) {
                assert!(r.is_ok(), "{kind} rejects {len}");
            } else {
                assert!(
                    matches!(r, Err(Error::InvalidKey { len: l, .. }) if l == len),
                    "{kind} accepts {len}"
                );
            }
        }
    }
    for len in 0..=64 {
        let r = Crypt::new(CipherKind::Blowfish, &key[..len]);
        assert_eq!(r.is_ok(), (1..=56).contains(&len), "blowfish {len}");
        for any in [
            CipherKind::Salsa20,
            CipherKind::Xor,
            CipherKind::None,
            CipherKind::Null,
        ] {
            assert!(Crypt::new(any, &key[..len]).is_ok(), "{any} {len}");
        }
    }
}

/// Go's Blowfish reads the key cyclically, so "ab" and "abab" are one key;
/// our 1..3-byte keys go through that equivalence.
#[test]
fn short_blowfish_keys_are_cyclic() {
    let data: Vec<u8> = (0..100u8).collect();
    for (short, long) in [
        (&b"a"[..], &b"aaaa"[..]),
        (b"ab", b"abab"),
        (b"abc", b"abcabc"),
    ] {
        let mut x = data.clone();
        let mut y = data.clone();
        Crypt::new(CipherKind::Blowfish, short)
            .unwrap()
            .encrypt_raw(&mut x)
            .unwrap();
        Crypt::new(CipherKind::Blowfish, long)
            .unwrap()
            .encrypt_raw(&mut y)
            .unwrap();
        assert_eq!(x, y);
        assert_ne!(x, data);
    }
}

/// Salsa20 copies the key into 32 bytes: short keys are zero-padded and
/// long ones truncated (§2.1).
#[test]
fn salsa20_key_is_padded_or_truncated() {
    let data = vec![0x5au8; 200];
    let enc = |key: &[u8]| {
        let mut b = data.clone();
        Crypt::new(CipherKind::Salsa20, key)
            .unwrap()
            .encrypt_raw(&mut b)
            .unwrap();
        b
    };
    let mut padded = [0u8; 32];
    padded[..5].copy_from_slice(b"short");
    assert_eq!(enc(b"short"), enc(&padded));
    let long: Vec<u8> = (0..40).collect();
    assert_eq!(enc(&long), enc(&long[..32]));
    assert_ne!(enc(&long), enc(b"short"));
    // Bytes 0..8 are the nonce and stay clear (§2.4).
    assert_eq!(enc(b"short")[..8], data[..8]);
}

#[test]
fn seal_checks_buffer_and_nonce() {
    for kind in CipherKind::ALL {
        let mut c = crypt_for(kind);
        let mut small = vec![0u8; 10 + c.overhead() - 1];
        assert!(
            matches!(c.seal(&mut small, 10), Err(Error::BufferTooSmall { need, have }) if need == have + 1),
            "{kind}"
        );
        let mut buf = vec![0u8; 100];
        let wrong = vec![0u8; kind.nonce_len() + 1];
        assert!(matches!(
            c.seal_with_nonce(&mut buf, 10, &wrong),
            Err(Error::InvalidNonce { .. })
        ));
    }
}

#[test]
fn nonces_are_fresh_per_datagram_and_per_clone() {
    for kind in [CipherKind::Aes128, CipherKind::AesGcm, CipherKind::None] {
        let mut a = crypt_for(kind);
        let mut b = a.clone();
        let n = kind.nonce_len();
        let mut seen = std::collections::HashSet::new();
        for c in [&mut a, &mut b] {
            for _ in 0..100 {
                let mut buf = [0u8; 64];
                c.seal(&mut buf, 8).unwrap();
                let mut opened = buf;
                let h = kind.header_len();
                c.open(&mut opened[..h + 8 + kind.trailer_len()]).unwrap();
                assert!(seen.insert(opened[..n].to_vec()), "{kind}: nonce repeated");
            }
        }
    }
}

#[test]
fn raw_is_refused_for_aead() {
    let c = crypt_for(CipherKind::AesGcm);
    assert!(matches!(
        c.encrypt_raw(&mut [0u8; 4]),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        c.decrypt_raw(&mut [0u8; 4]),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn crypt_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Crypt>();
}
