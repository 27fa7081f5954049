//! Test oracle: a deliberately naive model of kcp-go's `kcp.go` (O(window)
//! walks per ACK and per flush, exactly as kcp-go does them), written
//! independently of `engine.rs`. The differential tests below drive both with
//! the same calls and require identical datagrams and state, which is what
//! shows the indexed engine keeps kcp-go's observable behaviour.

use std::collections::VecDeque;

use super::*;
use crate::error::{Error, Result};

fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[derive(Debug, Clone)]
struct RSeg {
    sn: u32,
    frg: u8,
    ts: u32,
    xmit: u32,
    rto: u32,
    resendts: u32,
    fastack: u32,
    acked: bool,
    /// Held back while the peer was silent.
    held: bool,
    data: Vec<u8>,
}

/// The naive model. Field names follow kcp-go.
#[derive(Debug, Clone)]
pub(crate) struct RefKcp {
    conv: u32,
    mtu: usize,
    mss: usize,
    pub(crate) dead: bool,
    /// `RttSamples::EveryAck` (kcp-go) instead of the engine's default.
    pub(crate) every_ack: bool,
    /// `TimeoutResend::EverySegment` (kcp-go) instead of the engine's default.
    pub(crate) every_segment: bool,
    /// The latest of our send times an ACK echoed.
    heard: Option<u32>,
    /// When the next silent-peer probe may go.
    probe_due: Option<u32>,
    /// When the last probe went.
    probe_sent: Option<u32>,
    pub(crate) snd_una: u32,
    pub(crate) snd_nxt: u32,
    pub(crate) rcv_nxt: u32,
    pub(crate) ssthresh: u32,
    pub(crate) rx_rttvar: i32,
    pub(crate) rx_srtt: i32,
    pub(crate) rx_rto: u32,
    rx_minrto: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    pub(crate) rmt_wnd: u32,
    pub(crate) cwnd: u32,
    pub(crate) incr: u32,
    probe: u32,
    ts_probe: u32,
    probe_wait: u32,
    interval: u32,
    nodelay: u32,
    fastresend: i32,
    nocwnd: i32,
    stream: bool,
    snd_queue: VecDeque<(u8, Vec<u8>)>,
    rcv_queue: VecDeque<(u8, Vec<u8>)>,
    snd_buf: VecDeque<RSeg>,
    rcv_buf: Vec<(u32, u8, Vec<u8>)>,
    acklist: Vec<(u32, u32)>,
    pub(crate) stats: KcpStats,
}

impl RefKcp {
    pub(crate) fn new(conv: u32) -> RefKcp {
        RefKcp {
            conv,
            mtu: 1400,
            mss: 1376,
            dead: false,
            every_ack: false,
            every_segment: false,
            heard: None,
            probe_due: None,
            probe_sent: None,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: 2,
            rx_rttvar: 0,
            rx_srtt: 0,
            rx_rto: 200,
            rx_minrto: 100,
            snd_wnd: 32,
            rcv_wnd: 32,
            rmt_wnd: 32,
            cwnd: 0,
            incr: 0,
            probe: 0,
            ts_probe: 0,
            probe_wait: 0,
            interval: 100,
            nodelay: 0,
            fastresend: 0,
            nocwnd: 0,
            stream: false,
            snd_queue: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_buf: Vec::new(),
            acklist: Vec::new(),
            stats: KcpStats::default(),
        }
    }

    pub(crate) fn set_nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        if nodelay >= 0 {
            self.nodelay = nodelay as u32;
            self.rx_minrto = if nodelay != 0 { 30 } else { 100 };
        }
        if interval >= 0 {
            self.interval = interval.clamp(10, 5000) as u32;
        }
        if resend >= 0 {
            self.fastresend = resend;
        }
        if nc >= 0 {
            self.nocwnd = nc;
        }
    }

    pub(crate) fn set_wndsize(&mut self, snd: u32, rcv: u32) {
        if snd > 0 {
            self.snd_wnd = snd;
        }
        if rcv > 0 {
            self.rcv_wnd = rcv;
        }
    }

    pub(crate) fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
        self.mss = mtu - 24;
    }

    pub(crate) fn set_stream_mode(&mut self, on: bool) {
        self.stream = on;
    }

    pub(crate) fn wait_snd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    pub(crate) fn send(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Err(Error::EmptyMessage);
        }
        let mut rest = data;
        if self.stream {
            let room = self
                .snd_queue
                .back()
                .map_or(0, |l| self.mss.saturating_sub(l.1.len()));
            let take = room.min(rest.len());
            if (rest.len() - take).div_ceil(self.mss) > 255 {
                return Err(Error::MessageTooLarge {
                    len: data.len(),
                    fragments: 0,
                    max: 255,
                });
            }
            if let Some(l) = self.snd_queue.back_mut() {
                l.1.extend_from_slice(&rest[..take]);
            }
            rest = &rest[take..];
            if rest.is_empty() {
                return Ok(());
            }
        }
        let count = if rest.len() <= self.mss {
            1
        } else {
            rest.len().div_ceil(self.mss)
        };
        if count > 255 {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                fragments: count,
                max: 255,
            });
        }
        for i in 0..count {
            let n = rest.len().min(self.mss);
            let frg = if self.stream {
                0
            } else {
                (count - i - 1) as u8
            };
            self.snd_queue.push_back((frg, rest[..n].to_vec()));
            rest = &rest[n..];
        }
        Ok(())
    }

    pub(crate) fn peek_size(&self) -> Option<usize> {
        let f = self.rcv_queue.front()?;
        if f.0 == 0 {
            return Some(f.1.len());
        }
        if self.rcv_queue.len() < f.0 as usize + 1 {
            return None;
        }
        let mut n = 0;
        for s in &self.rcv_queue {
            n += s.1.len();
            if s.0 == 0 {
                break;
            }
        }
        Some(n)
    }

    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let Some(size) = self.peek_size() else {
            return Ok(None);
        };
        if size > buf.len() {
            return Err(Error::BufferTooSmall {
                need: size,
                have: buf.len(),
            });
        }
        let fast_recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut n = 0;
        while let Some((frg, d)) = self.rcv_queue.pop_front() {
            buf[n..n + d.len()].copy_from_slice(&d);
            n += d.len();
            if frg == 0 {
                break;
            }
        }
        self.move_rcv();
        if self.rcv_queue.len() < self.rcv_wnd as usize && fast_recover {
            self.probe |= 2;
        }
        Ok(Some(n))
    }

    fn move_rcv(&mut self) {
        while let Some(i) = self.rcv_buf.iter().position(|s| s.0 == self.rcv_nxt) {
            if self.rcv_queue.len() >= self.rcv_wnd as usize {
                break;
            }
            let (_, frg, d) = self.rcv_buf.remove(i);
            self.rcv_queue.push_back((frg, d));
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
    }

    fn update_ack(&mut self, rtt: i32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttvar = rtt >> 1;
        } else {
            let mut delta = rtt.wrapping_sub(self.rx_srtt);
            self.rx_srtt = self.rx_srtt.wrapping_add(delta >> 3);
            if delta < 0 {
                delta = delta.wrapping_neg();
            }
            if rtt < self.rx_srtt.wrapping_sub(self.rx_rttvar) {
                self.rx_rttvar = self
                    .rx_rttvar
                    .wrapping_add(delta.wrapping_sub(self.rx_rttvar) >> 5);
            } else {
                self.rx_rttvar = self
                    .rx_rttvar
                    .wrapping_add(delta.wrapping_sub(self.rx_rttvar) >> 2);
            }
        }
        let rto = (self.rx_srtt as u32)
            .wrapping_add(self.interval.max((self.rx_rttvar as u32).wrapping_shl(2)));
        self.rx_rto = rto.max(self.rx_minrto).min(60000);
    }

    pub(crate) fn input(
        &mut self,
        mut data: &[u8],
        regular: bool,
        ack_no_delay: bool,
        now: u32,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let prior_una = self.snd_una;
        if data.len() < 24 {
            return Err(Error::Truncated(""));
        }
        let mut latest = 0;
        let mut rtt = false;
        let mut segs = 0;
        let mut flush_segments = false;
        // Deliberate departure from kcp-go (the engine's Karn rule): only the
        // first ACK of a segment's latest transmission feeds the RTT. The
        // (sn, ts) of every unacknowledged segment as this datagram arrives;
        // the first ACK of an sn takes it out, and counts if its ts matches.
        let mut unacked: Vec<(u32, u32)> = self
            .snd_buf
            .iter()
            .filter(|s| !s.acked)
            .map(|s| (s.sn, s.ts))
            .collect();
        while data.len() >= 24 {
            let h = SegmentHeader::decode(data)?;
            data = &data[24..];
            if h.conv != self.conv {
                return Err(Error::ConvMismatch {
                    expected: self.conv,
                    got: h.conv,
                });
            }
            if (data.len() as u64) < u64::from(h.len) {
                return Err(Error::Truncated(""));
            }
            if !(81..=84).contains(&h.cmd) {
                return Err(Error::Malformed(""));
            }
            if regular {
                self.rmt_wnd = u32::from(h.wnd);
            }
            // parse_una + shrink_buf
            let mut count = 0;
            while let Some(f) = self.snd_buf.front() {
                if diff(h.una, f.sn) > 0 {
                    self.snd_buf.pop_front();
                    count += 1;
                } else {
                    break;
                }
            }
            if count > 0 {
                flush_segments = true;
            }
            self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
            match h.cmd {
                82 => {
                    // Evidence the peer got what we sent at h.ts (a ts from
                    // the future counts as now; one over 2^30 ms old as none).
                    let age = diff(now, h.ts);
                    if age < 1 << 30 {
                        let at = if age >= 0 { h.ts } else { now };
                        if self.heard.is_none_or(|h| diff(at, h) > 0) {
                            self.heard = Some(at);
                        }
                    }
                    let in_range = diff(h.sn, self.snd_una) >= 0 && diff(h.sn, self.snd_nxt) < 0;
                    if in_range {
                        for s in self.snd_buf.iter_mut() {
                            if s.sn == h.sn {
                                s.acked = true;
                                break;
                            }
                            if diff(h.sn, s.sn) < 0 {
                                break;
                            }
                        }
                        for s in self.snd_buf.iter_mut() {
                            if diff(h.sn, s.sn) < 0 {
                                break;
                            }
                            if h.sn != s.sn && diff(s.ts, h.ts) <= 0 && s.fastack != u32::MAX {
                                s.fastack += 1;
                                if s.fastack >= self.fastresend as u32 {
                                    flush_segments = true;
                                }
                            }
                        }
                    }
                    let counts = match unacked.iter().position(|&(sn, _)| sn == h.sn) {
                        Some(i) => unacked.remove(i).1 == h.ts,
                        None => false,
                    };
                    if counts || self.every_ack {
                        rtt = true;
                        latest = h.ts;
                    }
                }
                81 => {
                    let mut repeat = true;
                    if diff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        self.acklist.push((h.sn, h.ts));
                        if diff(h.sn, self.rcv_nxt) >= 0 {
                            if self.rcv_buf.iter().any(|s| s.0 == h.sn) {
                                repeat = true;
                            } else {
                                self.rcv_buf
                                    .push((h.sn, h.frg, data[..h.len as usize].to_vec()));
                                repeat = false;
                            }
                            self.move_rcv();
                        }
                    }
                    if regular && repeat {
                        self.stats.repeat_segs += 1;
                    }
                }
                83 => self.probe |= 2,
                _ => {}
            }
            segs += 1;
            data = &data[h.len as usize..];
        }
        self.stats.in_segs += segs;
        if rtt && regular && diff(now, latest) >= 0 {
            self.update_ack(diff(now, latest));
        }
        if self.nocwnd == 0 && diff(self.snd_una, prior_una) > 0 && self.cwnd < self.rmt_wnd {
            let mss = self.mss as u32;
            if self.cwnd < self.ssthresh {
                self.cwnd += 1;
                self.incr = self.incr.wrapping_add(mss);
            } else {
                if self.incr < mss {
                    self.incr = mss;
                }
                self.incr = self
                    .incr
                    .wrapping_add(mss.wrapping_mul(mss) / self.incr + mss / 16);
                if self.cwnd.wrapping_add(1).wrapping_mul(mss) <= self.incr {
                    self.cwnd = self.incr.wrapping_add(mss - 1) / mss;
                }
            }
            if self.cwnd > self.rmt_wnd {
                self.cwnd = self.rmt_wnd;
                self.incr = self.rmt_wnd.wrapping_mul(mss);
            }
        }
        // Held segments the evidence now covers are due at once.
        let mut released = false;
        if let Some(heard) = self.heard {
            for s in self.snd_buf.iter_mut() {
                if s.held && !s.acked && diff(s.ts, heard) <= 0 {
                    s.held = false;
                    s.resendts = now;
                    released = true;
                }
            }
        }
        // An ACK of the last probe (or of anything later) ends the silence.
        if let (Some(h), Some(p)) = (self.heard, self.probe_sent) {
            if diff(h, p) >= 0 {
                self.probe_due = None;
                self.probe_sent = None;
            }
        }
        if flush_segments || released {
            self.flush(true, now, out);
        } else if self.acklist.len() >= self.mtu / 24 || (ack_no_delay && !self.acklist.is_empty())
        {
            self.flush(false, now, out);
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, full: bool, now: u32, out: &mut Vec<Vec<u8>>) -> u32 {
        let wnd = if self.rcv_queue.len() < self.rcv_wnd as usize {
            (self.rcv_wnd as usize - self.rcv_queue.len()) as u16
        } else {
            0
        };
        let mut t = SegmentHeader {
            conv: self.conv,
            cmd: 82,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };
        let mut buf: Vec<u8> = Vec::new();
        let mtu = self.mtu;
        let space = |buf: &mut Vec<u8>, need: usize, out: &mut Vec<Vec<u8>>| {
            if buf.len() + need > mtu {
                if !buf.is_empty() {
                    out.push(std::mem::take(buf));
                }
                buf.clear();
            }
        };
        let n = self.acklist.len();
        for (i, &(sn, ts)) in self.acklist.iter().enumerate() {
            space(&mut buf, 24, out);
            if diff(sn, self.rcv_nxt) >= 0 || i + 1 == n {
                t.sn = sn;
                t.ts = ts;
                t.encode_to(&mut buf);
                self.stats.out_segs += 1;
            }
        }
        self.acklist.clear();
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = 500;
                self.ts_probe = now.wrapping_add(500);
            } else if diff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(500);
                self.probe_wait += self.probe_wait / 2;
                self.probe_wait = self.probe_wait.min(120000);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= 1;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        if self.probe & 1 != 0 {
            t.cmd = 83;
            space(&mut buf, 24, out);
            t.encode_to(&mut buf);
            self.stats.out_segs += 1;
        }
        if self.probe & 2 != 0 {
            t.cmd = 84;
            space(&mut buf, 24, out);
            t.encode_to(&mut buf);
            self.stats.out_segs += 1;
        }
        self.probe = 0;
        let mut cwnd = self.snd_wnd.min(self.rmt_wnd);
        if self.nocwnd == 0 {
            cwnd = cwnd.min(self.cwnd);
        }
        let mut new_segs = 0;
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some((frg, data)) = self.snd_queue.pop_front() else {
                break;
            };
            self.snd_buf.push_back(RSeg {
                sn: self.snd_nxt,
                frg,
                ts: 0,
                xmit: 0,
                rto: 0,
                resendts: 0,
                fastack: 0,
                acked: false,
                held: false,
                data,
            });
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            new_segs += 1;
        }
        let resent = if self.fastresend > 0 {
            self.fastresend as u32
        } else {
            u32::MAX
        };
        let mut next = self.interval;
        let (mut lost, mut fast, mut early) = (0u64, 0u64, 0u64);
        if full {
            for s in self.snd_buf.iter_mut() {
                if s.acked {
                    continue;
                }
                let send;
                if s.xmit == 0 {
                    send = true;
                    s.rto = self.rx_rto;
                    s.resendts = now.wrapping_add(s.rto);
                } else if s.fastack >= resent && s.fastack != u32::MAX {
                    send = true;
                    s.fastack = u32::MAX;
                    s.rto = self.rx_rto;
                    s.resendts = now.wrapping_add(s.rto);
                    fast += 1;
                } else if s.fastack > 0 && s.fastack != u32::MAX && new_segs == 0 {
                    send = true;
                    s.fastack = u32::MAX;
                    s.rto = self.rx_rto;
                    s.resendts = now.wrapping_add(s.rto);
                    early += 1;
                } else if diff(now, s.resendts) >= 0 {
                    // Silent: no ACK echoed a send time no earlier than this
                    // segment's. One probe per backed-off RTO, the rest wait.
                    let silent =
                        !self.every_segment && self.heard.is_none_or(|h| diff(s.ts, h) > 0);
                    let waiting = self.probe_due.is_some_and(|p| diff(now, p) < 0);
                    if silent && waiting {
                        s.held = true;
                        s.resendts = match self.probe_due {
                            Some(p) if diff(p, now) > 0 => p,
                            _ => now.wrapping_add(1),
                        };
                        let d = diff(s.resendts, now);
                        if d > 0 && (d as u32) < next {
                            next = d as u32;
                        }
                        continue;
                    }
                    send = true;
                    s.rto = s.rto.wrapping_add(if self.nodelay == 0 {
                        self.rx_rto
                    } else {
                        self.rx_rto / 2
                    });
                    s.fastack = 0;
                    s.resendts = now.wrapping_add(s.rto);
                    lost += 1;
                    if silent {
                        self.probe_due = Some(s.resendts);
                        self.probe_sent = Some(now);
                    }
                } else {
                    send = false;
                }
                if send {
                    s.held = false;
                    s.xmit += 1;
                    s.ts = now;
                    let h = SegmentHeader {
                        conv: self.conv,
                        cmd: 81,
                        frg: s.frg,
                        wnd: t.wnd,
                        ts: s.ts,
                        sn: s.sn,
                        una: t.una,
                        len: s.data.len() as u32,
                    };
                    space(&mut buf, 24 + s.data.len(), out);
                    h.encode_to(&mut buf);
                    buf.extend_from_slice(&s.data);
                    self.stats.out_segs += 1;
                    if s.xmit >= 20 {
                        self.dead = true;
                    }
                }
                let d = diff(s.resendts, now);
                if d > 0 && (d as u32) < next {
                    next = d as u32;
                }
            }
        }
        if !buf.is_empty() {
            out.push(buf);
        }
        self.stats.lost_segs += lost;
        self.stats.fast_retrans_segs += fast;
        self.stats.early_retrans_segs += early;
        self.stats.retrans_segs += lost + fast + early;
        if self.nocwnd == 0 {
            if fast + early > 0 {
                let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
                self.ssthresh = (inflight / 2).max(2);
                self.cwnd = self.ssthresh.wrapping_add(resent);
                self.incr = self.cwnd.wrapping_mul(self.mss as u32);
            }
            if lost > 0 {
                self.ssthresh = (cwnd / 2).max(2);
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
            if self.cwnd < 1 {
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Both engines, driven identically.
    struct Twin {
        fast: Kcp,
        slow: RefKcp,
        b1: Vec<u8>,
        b2: Vec<u8>,
    }

    impl Twin {
        fn new(
            conv: u32,
            nd: (i32, i32, i32, i32),
            wnd: (u32, u32),
            mtu: usize,
            stream: bool,
            rules: Rules,
        ) -> Twin {
            let mut fast = Kcp::new(conv);
            let mut slow = RefKcp::new(conv);
            fast.set_rtt_samples(rules.rtt);
            slow.every_ack = rules.rtt == RttSamples::EveryAck;
            fast.set_timeout_resend(rules.resend);
            slow.every_segment = rules.resend == TimeoutResend::EverySegment;
            fast.set_nodelay(nd.0, nd.1, nd.2, nd.3);
            slow.set_nodelay(nd.0, nd.1, nd.2, nd.3);
            fast.set_wndsize(wnd.0, wnd.1);
            slow.set_wndsize(wnd.0, wnd.1);
            fast.set_mtu(mtu).unwrap();
            slow.set_mtu(mtu);
            fast.set_stream_mode(stream);
            slow.set_stream_mode(stream);
            Twin {
                fast,
                slow,
                b1: vec![0; 1 << 19],
                b2: vec![0; 1 << 19],
            }
        }

        fn check(&self, what: &str) {
            let (f, s) = (&self.fast, &self.slow);
            let got = (
                f.snd_una(),
                f.snd_nxt(),
                f.rcv_nxt(),
                f.cwnd(),
                f.ssthresh(),
                f.rto(),
                f.srtt(),
                f.rttvar(),
                f.rmt_wnd(),
                f.wait_snd(),
                f.is_dead_link(),
            );
            let want = (
                s.snd_una,
                s.snd_nxt,
                s.rcv_nxt,
                s.cwnd,
                s.ssthresh,
                s.rx_rto,
                s.rx_srtt,
                s.rx_rttvar,
                s.rmt_wnd,
                s.wait_snd(),
                s.dead,
            );
            assert_eq!(got, want, "state differs after {what}");
            assert_eq!(f.stats(), &s.stats, "stats differ after {what}");
            let model: Vec<_> = s
                .snd_buf
                .iter()
                .filter(|x| !x.acked)
                .map(|x| (x.sn, x.fastack, x.xmit, x.ts))
                .collect();
            assert_eq!(f.debug_unacked(), model, "segments differ after {what}");
        }

        fn input(&mut self, d: &[u8], regular: bool, and: bool, now: u32) -> Vec<Vec<u8>> {
            let mut a = Vec::new();
            let mut b = Vec::new();
            let kind = if regular {
                PacketKind::Regular
            } else {
                PacketKind::Recovered
            };
            let before_fast = self.fast.debug_acked();
            let before_model: Vec<_> = self
                .slow
                .snd_buf
                .iter()
                .filter(|x| x.acked)
                .map(|x| (x.sn, x.fastack, x.ts))
                .collect();
            let r1 = self
                .fast
                .input(d, kind, and, now, &mut |x: &[u8]| a.push(x.to_vec()));
            let r2 = self.slow.input(d, regular, and, now, &mut b);
            assert_eq!(r1.is_ok(), r2.is_ok(), "input result {r1:?} vs {r2:?}");
            if r1.is_ok() && a != b {
                panic!(
                    "input output differs at {now}\n in: {:?}\n fast: {:?}\n model: {:?}\n {before_fast:?}\n {before_model:?}",
                    summary(&[d.to_vec()]),
                    summary(&a),
                    summary(&b)
                );
            }
            self.check("input");
            a
        }

        fn flush(&mut self, full: bool, now: u32) -> (Vec<Vec<u8>>, u32) {
            let mut a = Vec::new();
            let mut b = Vec::new();
            let kind = if full {
                FlushKind::Full
            } else {
                FlushKind::AckOnly
            };
            let n1 = self
                .fast
                .flush(kind, now, &mut |x: &[u8]| a.push(x.to_vec()));
            let n2 = self.slow.flush(full, now, &mut b);
            assert!(
                a == b,
                "flush output differs at {now}\n fast: {:?}\n model: {:?}",
                summary(&a),
                summary(&b)
            );
            assert_eq!(n1, n2, "flush delay differs at {now}");
            self.check("flush");
            (a, n1)
        }

        fn send(&mut self, d: &[u8]) {
            let r1 = self.fast.send(d);
            let r2 = self.slow.send(d);
            assert_eq!(r1.is_ok(), r2.is_ok());
            self.check("send");
        }

        fn recv_all(&mut self, out: &mut Vec<u8>) {
            loop {
                let r1 = self.fast.recv(&mut self.b1).unwrap();
                let r2 = self.slow.recv(&mut self.b2).unwrap();
                assert_eq!(r1, r2);
                let Some(n) = r1 else { break };
                assert_eq!(self.b1[..n], self.b2[..n]);
                out.extend_from_slice(&self.b1[..n]);
            }
            self.check("recv");
        }
    }

    /// (cmd, sn, una, ts, len) of every segment, per datagram.
    type Summary = Vec<Vec<(u8, u32, u32, u32, u32)>>;

    fn summary(dgs: &[Vec<u8>]) -> Summary {
        dgs.iter()
            .map(|d| {
                crate::kcp::Segments::new(d)
                    .filter_map(|s| s.ok())
                    .map(|(h, _)| (h.cmd, h.sn, h.una, h.ts, h.len))
                    .collect()
            })
            .collect()
    }

    /// A datagram in flight; ordered by arrival (offset from the start clock)
    /// then send order, as a min-heap.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Flight {
        key: std::cmp::Reverse<(u32, u64)>,
        to_b: bool,
        data: Vec<u8>,
    }

    #[derive(Clone)]
    struct Setup {
        nd: (i32, i32, i32, i32),
        wnd: (u32, u32),
        mtu: usize,
        stream: bool,
        rules: Rules,
        /// `(period, length)` ms: the link drops everything sent during the
        /// first `length` ms of every `period` (silent peers, whole windows
        /// lost), on top of the random loss.
        outage: Option<(u32, u32)>,
    }

    /// The engine's local choices, each against its naive model.
    #[derive(Debug, Clone, Copy)]
    struct Rules {
        rtt: RttSamples,
        resend: TimeoutResend,
    }

    /// Every combination of the rules.
    const ALL_RULES: [Rules; 4] = [
        Rules {
            rtt: RttSamples::LatestTransmission,
            resend: TimeoutResend::ProbeWhileSilent,
        },
        Rules {
            rtt: RttSamples::EveryAck,
            resend: TimeoutResend::EverySegment,
        },
        Rules {
            rtt: RttSamples::LatestTransmission,
            resend: TimeoutResend::EverySegment,
        },
        Rules {
            rtt: RttSamples::EveryAck,
            resend: TimeoutResend::ProbeWhileSilent,
        },
    ];

    /// A lossy, reordering, duplicating transfer where every call to the fast
    /// engine is mirrored on the model and compared.
    fn differential_transfer(seed: u64, loss: f64, s: &Setup, bytes: usize, start: u32) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut a = Twin::new(7, s.nd, s.wnd, s.mtu, s.stream, s.rules);
        let mut b = Twin::new(7, s.nd, s.wnd, s.mtu, s.stream, s.rules);
        let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + seed as usize) as u8).collect();
        let mut off = 0;
        let mut got = Vec::new();
        let mut net = std::collections::BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = start;
        let mut next_a = now;
        let mut next_b = now;
        let ack_nd = seed.is_multiple_of(3);
        let mut steps = 0;
        let mut push = |net: &mut std::collections::BinaryHeap<Flight>,
                        rng: &mut SmallRng,
                        now: u32,
                        to_b: bool,
                        dgs: Vec<Vec<u8>>| {
            let down = s
                .outage
                .is_some_and(|(period, len)| now.wrapping_sub(start) % period < len);
            for d in dgs {
                if rng.gen_bool(loss) || down {
                    continue;
                }
                let copies = if rng.gen_bool(0.03) { 2 } else { 1 };
                for _ in 0..copies {
                    let at = now.wrapping_add(rng.gen_range(10..40));
                    seq += 1;
                    net.push(Flight {
                        key: std::cmp::Reverse((at.wrapping_sub(start), seq)),
                        to_b,
                        data: d.clone(),
                    });
                }
            }
        };
        while got.len() < bytes {
            steps += 1;
            assert!(steps < 2_000_000, "no progress");
            while off < bytes && a.fast.wait_snd() < s.wnd.0 as usize {
                let n = rng.gen_range(1..=3000).min(bytes - off);
                a.send(&data[off..off + n]);
                off += n;
                let (o, _) = a.flush(true, now);
                push(&mut net, &mut rng, now, true, o);
            }
            while net
                .peek()
                .is_some_and(|f| f.key.0 .0 <= now.wrapping_sub(start))
            {
                let Some(f) = net.pop() else { break };
                let regular = !rng.gen_bool(0.1);
                let o = if f.to_b {
                    b.input(&f.data, regular, ack_nd, now)
                } else {
                    a.input(&f.data, regular, ack_nd, now)
                };
                push(&mut net, &mut rng, now, !f.to_b, o);
            }
            b.recv_all(&mut got);
            if diff(now, next_a) >= 0 {
                let (o, d) = a.flush(true, now);
                next_a = now.wrapping_add(d);
                push(&mut net, &mut rng, now, true, o);
            }
            if diff(now, next_b) >= 0 {
                let (o, d) = b.flush(true, now);
                next_b = now.wrapping_add(d);
                push(&mut net, &mut rng, now, false, o);
            }
            // Advance the clock to the next event.
            let mut t = if diff(next_b, next_a) < 0 {
                next_b
            } else {
                next_a
            };
            if let Some(f) = net.peek() {
                let at = start.wrapping_add(f.key.0 .0);
                if diff(at, t) < 0 {
                    t = at;
                }
            }
            if diff(t, now) > 0 {
                now = t;
            }
        }
        assert_eq!(got, data);
    }

    #[test]
    fn differential_transfers() {
        let setups = [
            ((1, 20, 2, 1), (128, 128), 1400, true),
            ((0, 40, 2, 1), (64, 64), 1400, false),
            ((0, 100, 0, 0), (32, 32), 1400, true),
            ((1, 10, 0, 1), (256, 256), 1400, true),
            ((1, 10, 3, 0), (1024, 1024), 1400, true),
            ((0, 30, 1, 0), (16, 300), 1400, false),
            // Many small segments: windows that fill, ring growth, block minima.
            ((1, 10, 2, 1), (2048, 2048), 120, true),
            ((1, 10, 0, 1), (700, 700), 150, false),
        ];
        for rules in ALL_RULES {
            for (i, &(nd, wnd, mtu, stream)) in setups.iter().enumerate() {
                let setup = Setup {
                    nd,
                    wnd,
                    mtu,
                    stream,
                    rules,
                    outage: None,
                };
                for (j, loss) in [0.0, 0.1, 0.3].into_iter().enumerate() {
                    let seed = (i * 10 + j) as u64;
                    let start = if j == 1 { 0xFFFF_F000 } else { 1000 };
                    differential_transfer(seed, loss, &setup, 200_000, start);
                }
                // Outages of 300 ms every 700 ms: timers expire with nothing
                // heard, and the first ACK after each releases what waited.
                let setup = Setup {
                    outage: Some((700, 300)),
                    ..setup
                };
                differential_transfer(i as u64 + 100, 0.05, &setup, 100_000, 0xFFFF_FE00);
            }
        }
    }

    /// Hostile input: random ACK/PUSH/WASK/WINS datagrams with sn, una and
    /// ts scattered around the live window, plus garbage, against a sender
    /// with data in flight.
    #[test]
    fn differential_hostile_inputs() {
        hostile_seeds(0..200);
    }

    /// Long soak: `cargo test --lib soak -- --ignored`.
    #[test]
    #[ignore]
    fn differential_soak() {
        hostile_seeds(1000..20000);
        // Windows far beyond 4096 segments (block-of-blocks minima), tiny mtu.
        for seed in 0..6u64 {
            let setup = Setup {
                nd: (1, 10, (seed % 3) as i32, 1),
                wnd: (9000 + seed as u32 * 1000, 16000),
                mtu: 60,
                stream: true,
                rules: rule_of(seed),
                outage: (seed % 3 == 0).then_some((900, 250)),
            };
            differential_transfer(seed, 0.05 * seed as f64, &setup, 600_000, 77);
        }
        for seed in 0..300u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let setup = Setup {
                nd: (
                    rng.gen_range(0..2),
                    rng.gen_range(10..60),
                    rng.gen_range(0..4),
                    rng.gen_range(0..2),
                ),
                wnd: (rng.gen_range(1..3000), rng.gen_range(256..3000)),
                mtu: rng.gen_range(60..1500),
                stream: rng.gen_bool(0.5),
                rules: rule_of(seed),
                outage: (seed % 3 == 0).then_some((900, 250)),
            };
            let loss = rng.gen_range(0.0..0.4);
            differential_transfer(seed, loss, &setup, 150_000, rng.gen());
        }
    }

    /// Every combination of the rules, in turn by seed.
    fn rule_of(seed: u64) -> Rules {
        ALL_RULES[(seed % ALL_RULES.len() as u64) as usize]
    }

    fn hostile_seeds(seeds: std::ops::Range<u64>) {
        for seed in seeds {
            let mut rng = SmallRng::seed_from_u64(seed);
            let resend = rng.gen_range(0..4);
            let nc = rng.gen_range(0..2);
            let wnd = [4u32, 32, 200][rng.gen_range(0..3)];
            let mut t = Twin::new(
                9,
                (rng.gen_range(0..2), 10, resend, nc),
                (wnd, wnd),
                200,
                rng.gen_bool(0.5),
                rule_of(seed),
            );
            let mut now: u32 = rng.gen();
            for _ in 0..30 {
                let n = rng.gen_range(1..2000);
                t.send(&vec![1u8; n]);
            }
            for step in 0..400 {
                now = now.wrapping_add(rng.gen_range(0..60));
                match rng.gen_range(0..10) {
                    0 => {
                        t.flush(rng.gen_bool(0.8), now);
                    }
                    1 => t.send(&vec![2u8; rng.gen_range(1..500)]),
                    2 => {
                        let mut g = Vec::new();
                        t.recv_all(&mut g);
                    }
                    _ => {
                        let mut d = Vec::new();
                        for _ in 0..rng.gen_range(1..6) {
                            let base = if rng.gen_bool(0.5) {
                                t.fast.snd_una()
                            } else {
                                t.fast.rcv_nxt()
                            };
                            let cmd = [81u8, 82, 82, 82, 83, 84, 85][rng.gen_range(0..7)];
                            let body = if cmd == 81 { rng.gen_range(0..40) } else { 0 };
                            let h = SegmentHeader {
                                conv: if rng.gen_bool(0.02) { 8 } else { 9 },
                                cmd,
                                frg: rng.gen_range(0..3),
                                wnd: [0u16, 1, 5, 300][rng.gen_range(0..4)],
                                ts: if rng.gen_bool(0.1) {
                                    rng.gen()
                                } else {
                                    now.wrapping_sub(rng.gen_range(0..300))
                                },
                                sn: base.wrapping_add(rng.gen_range(0..40)).wrapping_sub(5),
                                una: if rng.gen_bool(0.7) {
                                    t.fast.snd_una()
                                } else {
                                    base.wrapping_add(rng.gen_range(0..10))
                                },
                                len: if rng.gen_bool(0.02) { 1000 } else { body },
                            };
                            h.encode_to(&mut d);
                            d.extend(std::iter::repeat_n(3u8, body as usize));
                        }
                        t.input(&d, rng.gen_bool(0.8), rng.gen_bool(0.3), now);
                    }
                }
                let _ = step;
            }
        }
    }
}
