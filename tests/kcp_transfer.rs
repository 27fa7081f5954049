//! Byte-exact transfers over the simulated link (feature `testing`).
#![cfg(feature = "testing")]

use kcp_session::testing::{run_transfer, TransferConfig, TransferMode};

#[test]
fn smoke() {
    for loss in [0.0, 0.05, 0.2, 0.3] {
        let cfg = TransferConfig::new(1 << 20, loss, 1);
        let t = std::time::Instant::now();
        let r = run_transfer(&cfg).unwrap();
        eprintln!("{loss} {:?} {:?}", t.elapsed(), r);
    }
}

#[test]
fn perfect_link_no_retransmits() {
    let mut cfg = TransferConfig::new(1 << 20, 0.0, 1);
    cfg.link = kcp_session::testing::LinkConfig::perfect(20);
    let r = run_transfer(&cfg).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.sender.retrans_segs, 0);
    let _ = TransferMode::Stream { write_size: 1 };
}
