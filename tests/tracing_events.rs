//! The `tracing` feature: what a subscriber sees, captured by a layer that
//! records every event with its fields and the fields of the spans around
//! it. Each test runs on tokio's current-thread runtime with the capturing
//! subscriber as the thread's default, so it sees only its own sessions.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcp_session::{Config, Listener, Mode, Session};
use support::{bounded, echo_round_trip, echo_server, pattern, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const LIMIT: Duration = Duration::from_secs(20);

type Fields = BTreeMap<String, String>;

/// One captured event.
#[derive(Debug, Clone)]
struct Rec {
    level: Level,
    message: String,
    fields: Fields,
    /// (name, fields), innermost first.
    spans: Vec<(String, Fields)>,
}

impl Rec {
    fn field(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
    /// The innermost span called `name`.
    fn span(&self, name: &str) -> Option<&Fields> {
        self.spans.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_string(), v.to_string());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_string(), format!("{v:?}"));
    }
}

struct SpanFields(Fields);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Rec>>>);

impl Capture {
    fn all(&self) -> Vec<Rec> {
        self.0.lock().unwrap().clone()
    }
    fn with_message(&self, m: &str) -> Vec<Rec> {
        self.all().into_iter().filter(|r| r.message == m).collect()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::new();
        attrs.record(&mut Visitor(&mut f));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(f));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(SpanFields(f)) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Visitor(f));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let f = span
                    .extensions()
                    .get::<SpanFields>()
                    .map(|s| s.0.clone())
                    .unwrap_or_default();
                spans.push((span.name().to_string(), f));
            }
        }
        self.0.lock().unwrap().push(Rec {
            level: *event.metadata().level(),
            message,
            fields,
            spans,
        });
    }
}

/// Installs a fresh capture as this thread's subscriber.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let cap = Capture::default();
    let sub = tracing_subscriber::registry().with(cap.clone());
    let guard = tracing::subscriber::set_default(sub);
    (cap, guard)
}

fn base() -> kcp_session::ConfigBuilder {
    Config::builder()
        .crypt_kcptun("aes-128", "tracing")
        .mode(Mode::Fast3)
}

#[tokio::test]
async fn sessions_open_and_close_in_their_spans_with_per_packet_traces() {
    let (cap, _g) = capture();
    let cfg = base().build().unwrap();
    let server = echo_server(&cfg).await;
    let s = Session::dial(server.addr, &cfg).await.unwrap();
    let conv = s.conv().to_string();
    let local = s.local_addr();
    let data = Arc::new(pattern(1, 20_000));
    let (back, _) = bounded(LIMIT, "echo", echo_round_trip(s, data.clone())).await;
    assert_eq!(back, *data);

    let opened = cap.with_message("session opened");
    let dialed = opened
        .iter()
        .find(|r| r.span("session").is_some_and(|f| f["origin"] == "dialed"))
        .expect("an opened event for the dialed session");
    let sf = dialed.span("session").unwrap();
    assert_eq!(sf["conv"], conv);
    assert_eq!(sf["peer"], server.addr.to_string());
    assert_eq!(dialed.level, Level::INFO);
    let accepted = opened
        .iter()
        .find(|r| r.span("session").is_some_and(|f| f["origin"] == "accepted"))
        .expect("an opened event for the accepted session");
    let af = accepted.span("session").unwrap();
    assert_eq!(af["conv"], conv);
    // Loopback: the listener sees the dialer from 127.0.0.1 on its port.
    assert!(
        af["peer"].ends_with(&format!(":{}", local.port())),
        "{af:?}"
    );
    // The accepted session's span nests in its listener's.
    assert_eq!(
        accepted.span("listener").map(|f| f["local"].clone()),
        Some(server.addr.to_string())
    );

    // echo_round_trip dropped the dialed session: it closed, locally.
    let closed = cap.with_message("session closed");
    let c = closed
        .iter()
        .find(|r| r.span("session").is_some_and(|f| f["origin"] == "dialed"))
        .expect("a closed event for the dialed session");
    assert_eq!(c.field("reason"), Some("Closed"));

    // kcp-go's SetLogger equivalent, at trace level, in the session spans.
    let all = cap.all();
    let seg_in = all
        .iter()
        .filter(|r| r.message == "segment" && r.field("dir") == Some("in"))
        .filter(|r| r.level == Level::TRACE)
        .filter(|r| r.span("session").is_some_and(|f| f["conv"] == conv))
        .count();
    let pushes_out = all
        .iter()
        .filter(|r| r.message == "segment" && r.field("dir") == Some("out"))
        .filter(|r| r.field("cmd") == Some("PUSH"))
        .filter(|r| r.span("session").is_some_and(|f| f["origin"] == "dialed"))
        .count();
    let datagrams_out = all.iter().filter(|r| r.message == "datagram out").count();
    let datagrams_in = all.iter().filter(|r| r.message == "datagram in").count();
    // 20,000 bytes are at least 15 PUSH segments each way.
    assert!(seg_in >= 30, "{seg_in} segment-in traces");
    assert!(pushes_out >= 15, "{pushes_out} PUSH traces from the dialer");
    assert!(datagrams_out >= 15 && datagrams_in >= 15);
    // Nothing was dropped on a clean loopback.
    assert!(cap.with_message("datagrams dropped").is_empty());
}

#[tokio::test]
async fn garbage_is_warned_of_with_its_counter_and_rate_limited() {
    let (cap, _g) = capture();
    let cfg = base().build().unwrap();
    let server = echo_server(&cfg).await;
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = junk.local_addr().unwrap();
    const N: u64 = 500;
    let t = Instant::now();
    for i in 0..N {
        // 100 bytes: long enough to be checked, so each fails the CRC.
        junk.send_to(&pattern(i, 100), server.addr).await.unwrap();
        if i % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    let listener = server.listener.clone();
    assert!(wait_until(LIMIT, || listener.stats().in_csum_errors == N).await);
    let elapsed = t.elapsed();

    let warns: Vec<Rec> = cap
        .with_message("datagrams dropped")
        .into_iter()
        .filter(|r| r.field("counter") == Some("InCsumErrors"))
        .collect();
    assert!(!warns.is_empty(), "no warning for {N} bad datagrams");
    let first = &warns[0];
    assert_eq!(first.level, Level::WARN);
    assert_eq!(first.field("reason"), Some("Integrity"));
    assert_eq!(first.field("peer"), Some(from.to_string().as_str()));
    assert_eq!(first.field("dropped"), Some("1"));
    assert_eq!(
        first.span("listener").map(|f| f["local"].clone()),
        Some(server.addr.to_string())
    );
    // At most one warning per second after the first.
    let allowed = 1 + elapsed.as_secs() as usize + 1;
    assert!(
        warns.len() <= allowed,
        "{} warnings in {elapsed:?}",
        warns.len()
    );
    // What the warnings carry adds up: no more than counted, totals rise.
    let mut sum = 0u64;
    let mut last_total = 0u64;
    for w in &warns {
        let dropped: u64 = w.field("dropped").unwrap().parse().unwrap();
        let total: u64 = w.field("total").unwrap().parse().unwrap();
        sum += dropped;
        assert!(total > last_total && total == sum, "{warns:?}");
        last_total = total;
    }
    assert!(sum <= N);
}

#[tokio::test]
async fn dead_link_and_idle_timeout_are_warned_of_before_the_close() {
    let (cap, _g) = capture();
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_cfg = base().dead_link(Some(3)).build().unwrap();
    let mut s = Session::dial(silent.local_addr().unwrap(), &dead_cfg)
        .await
        .unwrap();
    let dead_conv = s.conv().to_string();
    s.write_all(b"anyone there?").await.unwrap();
    let mut b = [0u8; 1];
    bounded(LIMIT, "dead link", s.read(&mut b))
        .await
        .unwrap_err();

    let idle_cfg = base()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let mut i = Session::dial(silent.local_addr().unwrap(), &idle_cfg)
        .await
        .unwrap();
    let idle_conv = i.conv().to_string();
    bounded(LIMIT, "idle", i.read(&mut b)).await.unwrap_err();

    let in_conv = |r: &Rec, conv: &str| r.span("session").is_some_and(|f| f["conv"] == conv);
    let all = cap.all();
    let dead = all
        .iter()
        .position(|r| r.message.starts_with("dead link") && in_conv(r, &dead_conv))
        .expect("a dead-link warning");
    assert_eq!(all[dead].level, Level::WARN);
    assert_eq!(all[dead].field("transmissions"), Some("3"));
    let closed = all
        .iter()
        .position(|r| r.message == "session closed" && in_conv(r, &dead_conv))
        .expect("a close event");
    assert!(closed > dead);
    assert_eq!(all[closed].field("reason"), Some("DeadLink(3)"));

    let idle = all
        .iter()
        .position(|r| r.message.starts_with("idle timeout") && in_conv(r, &idle_conv))
        .expect("an idle-timeout warning");
    assert_eq!(all[idle].field("idle_ms"), Some("300"));
    let closed = all
        .iter()
        .position(|r| r.message == "session closed" && in_conv(r, &idle_conv))
        .expect("a close event");
    assert!(closed > idle);
    assert_eq!(all[closed].field("reason"), Some("IdleTimeout"));
}

/// A valid first PUSH (conv, sn 0) for a "null"-crypt, FEC-less listener.
fn push(conv: u32, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&conv.to_le_bytes());
    p.extend_from_slice(&[81, 0]); // IKCP_CMD_PUSH, frg 0
    p.extend_from_slice(&128u16.to_le_bytes()); // wnd
    p.extend_from_slice(&0u32.to_le_bytes()); // ts
    p.extend_from_slice(&0u32.to_le_bytes()); // sn
    p.extend_from_slice(&0u32.to_le_bytes()); // una
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(data);
    p
}

#[tokio::test]
async fn eviction_names_the_evicted_peer_and_closes_it_as_evicted() {
    let (cap, _g) = capture();
    let cfg = Config::builder()
        .crypt_kcptun("null", "")
        .mode(Mode::Fast3)
        .max_sessions(Some(1))
        .build()
        .unwrap();
    let server = echo_server(&cfg).await;
    // An unproven session (it never acknowledges anything) fills the table.
    let squatter = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let squatter_addr: SocketAddr = squatter.local_addr().unwrap();
    squatter
        .send_to(&push(0x5eed, b"hi"), server.addr)
        .await
        .unwrap();
    let listener = server.listener.clone();
    assert!(wait_until(LIMIT, || listener.session_count() == 1).await);
    // Unproven sessions are safe from eviction for their first second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Session::dial(server.addr, &cfg).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    bounded(LIMIT, "echo", c.read_exact(&mut b)).await.unwrap();
    assert_eq!(server.listener.evictions(), 1);

    let ev = cap.with_message("evicting a session for a newcomer");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        ev[0].field("peer"),
        Some(squatter_addr.to_string().as_str())
    );
    assert_eq!(ev[0].field("conv"), Some(&*0x5eedu32.to_string()));
    assert!(ev[0].span("listener").is_some());
    let closed = cap
        .with_message("session closed")
        .into_iter()
        .find(|r| {
            r.span("session")
                .is_some_and(|f| f["conv"] == 0x5eedu32.to_string())
        })
        .expect("the evicted session's close");
    assert_eq!(closed.field("reason"), Some("Evicted"));
}

#[tokio::test]
async fn a_receiver_retuning_to_the_peers_fec_layout_says_so() {
    let (cap, _g) = capture();
    let server_cfg = base().fec(3, 2).build().unwrap();
    let client_cfg = base().fec(10, 3).build().unwrap();
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &server_cfg).await.unwrap());
    let addr = listener.local_addr();
    let task = support::serve_echo(listener);
    let s = Session::dial(addr, &client_cfg).await.unwrap();
    let data = Arc::new(pattern(7, 256 << 10));
    let (back, _) = bounded(LIMIT, "echo", echo_round_trip(s, data.clone())).await;
    assert_eq!(back, *data);
    task.abort();

    let retunes = cap.with_message("FEC layout retuned to the peer's");
    let server_side = retunes
        .iter()
        .find(|r| r.span("session").is_some_and(|f| f["origin"] == "accepted"))
        .expect("the listener's session retuned to 10/3");
    assert_eq!(server_side.field("data_shards"), Some("10"));
    assert_eq!(server_side.field("parity_shards"), Some("3"));
    assert_eq!(server_side.field("was_data"), Some("3"));
    assert_eq!(server_side.field("was_parity"), Some("2"));
}
