//! crypt: every cipher, every backend. Opening arbitrary bytes never panics
//! and gives the same verdict and bytes under the SIMD fast paths (best and
//! SSE-only builds) and the portable RustCrypto code; sealing with one nonce
//! gives identical datagrams everywhere; every backend opens them back to the
//! payload; a flipped bit in the authenticated region is refused.

#![no_main]

use fuzz_util::Input;
use kcp_session::crypt::{Backend, CipherKind, Crypt, MTU_LIMIT, NONCE_SIZE};
use kcp_session::Error;
use libfuzzer_sys::fuzz_target;

const BACKENDS: [Backend; 3] = [Backend::Fastest, Backend::Sse, Backend::Portable];

fn verdict(r: &Result<std::ops::Range<usize>, Error>) -> String {
    match r {
        Ok(range) => format!("ok {range:?}"),
        Err(Error::Truncated(_)) => "truncated".into(),
        Err(Error::Checksum) => "checksum".into(),
        Err(Error::Authentication) => "authentication".into(),
        Err(e) => panic!("open returned an error no datagram can cause: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = CipherKind::ALL[input.below(CipherKind::ALL.len())];
    let flags = input.u8();
    // Mostly the key length kcptun uses (so the datagram paths get the
    // time); sometimes any length, to exercise the key checks.
    let key_len = if flags & 1 == 0 {
        kind.kcptun_key_len()
    } else {
        input.below(60)
    };
    let key = input.bytes(key_len).to_vec();
    let crypts: Vec<Result<Crypt, Error>> = BACKENDS
        .iter()
        .map(|&b| Crypt::with_backend(kind, &key, b))
        .collect();
    // Key validation does not depend on the backend.
    let accepted: Vec<bool> = crypts.iter().map(|c| c.is_ok()).collect();
    assert!(
        accepted.iter().all(|&a| a == accepted[0]),
        "{kind}: backends disagree on key of {} bytes",
        key.len()
    );
    for c in &crypts {
        if let Err(e) = c {
            assert!(
                matches!(e, Error::InvalidKey { .. }),
                "{kind}: key error {e:?}"
            );
        }
    }
    let Ok(crypts) = crypts.into_iter().collect::<Result<Vec<_>, _>>() else {
        return;
    };

    let nonce = input.bytes(kind.nonce_len()).to_vec();
    let cut = input.u16() as usize;
    let flip = input.u16() as usize;
    let body = input.rest();

    // 1. Opening hostile bytes.
    let hostile = &body[..body.len().min(MTU_LIMIT + 64)];
    let mut first: Option<(String, Vec<u8>)> = None;
    for c in &crypts {
        let mut buf = hostile.to_vec();
        let r = c.open(&mut buf);
        let v = verdict(&r);
        if let Ok(range) = &r {
            assert!(range.end <= buf.len());
        }
        // On an AEAD failure the plaintext is withheld (the backends differ
        // in what they leave behind); otherwise the bytes must agree.
        if kind.is_aead() && r.is_err() {
            buf.clear();
        }
        match &first {
            None => first = Some((v, buf)),
            Some((v0, b0)) => {
                assert_eq!(&v, v0, "{kind}: backends disagree on a datagram");
                assert_eq!(&buf, b0, "{kind}: backends decrypt differently");
            }
        }
    }

    // 2. Seal with a chosen nonce: identical datagrams, all open them.
    if nonce.len() != kind.nonce_len() {
        return;
    }
    let payload = &body[..body.len().min(MTU_LIMIT - crypts[0].overhead())];
    let h = crypts[0].header_len();
    let mut sealed: Option<Vec<u8>> = None;
    for c in &crypts {
        let mut buf = vec![0u8; payload.len() + c.overhead()];
        buf[h..h + payload.len()].copy_from_slice(payload);
        let n = c
            .seal_with_nonce(&mut buf, payload.len(), &nonce)
            .expect("buffer sized for the datagram");
        assert_eq!(n, buf.len());
        match &sealed {
            None => sealed = Some(buf),
            Some(s) => assert_eq!(&buf, s, "{kind}: backends seal differently"),
        }
    }
    let Some(sealed) = sealed else { return };
    for c in &crypts {
        let mut buf = sealed.clone();
        let range = c.open(&mut buf).expect("own datagram opens");
        assert_eq!(&buf[range], payload, "{kind}: round trip");
    }

    // 3. A random nonce from `seal` opens under another backend.
    let mut sealer = crypts[(flags as usize >> 1) % crypts.len()].clone();
    let mut buf = vec![0u8; payload.len() + sealer.overhead()];
    buf[h..h + payload.len()].copy_from_slice(payload);
    let n = sealer.seal(&mut buf, payload.len()).expect("seal");
    let opener = &crypts[(flags as usize >> 3) % crypts.len()];
    let range = opener.open(&mut buf[..n]).expect("opens");
    assert_eq!(&buf[range], payload);

    // 4. Tampering: a truncated datagram or a flipped bit where the CRC or
    // tag covers it is refused. (The 16-byte nonce of a non-AEAD datagram
    // is not covered: kcp-go's format checks only the payload.)
    if kind == CipherKind::Null {
        return;
    }
    let covered_from = if kind.is_aead() { 0 } else { NONCE_SIZE };
    if sealed.len() > covered_from {
        let pos = covered_from + flip / 8 % (sealed.len() - covered_from);
        for c in &crypts {
            let mut buf = sealed.clone();
            buf[pos] ^= 1 << (flip % 8);
            assert!(
                c.open(&mut buf).is_err(),
                "{kind}: bit {} of byte {pos} flipped and still accepted",
                flip % 8
            );
        }
    }
    if !sealed.is_empty() {
        let keep = cut % sealed.len();
        for c in &crypts {
            let mut buf = sealed[..keep].to_vec();
            if let Ok(range) = c.open(&mut buf) {
                panic!(
                    "{kind}: truncated to {keep} of {} bytes and accepted as {range:?}",
                    sealed.len()
                );
            }
        }
    }
});
