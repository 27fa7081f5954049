// KCP trace vectors: real kcp-go v5.6.72 KCP engines driven through scripted
// and simulated-lossy scenarios on a controlled clock. Every call and its
// result (datagrams written, return value, WaitSnd) is recorded, so the Rust
// engine can replay the same calls and must produce the same bytes.
//
// Regenerate with:  cd interop && go test ./vectors -run TestGenKCPTraces
// (writes ../tests/vectors/kcp_trace_*.json). Written for kcp-session; it
// calls kcp-go through its exported API plus two linknamed internals: the
// unexported flush (so flushes happen exactly when the script says) and the
// package clock reference (so currentMs() returns the script's time).
package vectors

import (
	"encoding/hex"
	"encoding/json"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"
	"unsafe"

	kcp "github.com/xtaci/kcp-go/v5"
)

//go:linkname refTime github.com/xtaci/kcp-go/v5.refTime
var refTime time.Time

//go:linkname kcpFlush github.com/xtaci/kcp-go/v5.(*KCP).flush
func kcpFlush(k *kcp.KCP, ft kcp.FlushType) uint32

// setClock makes kcp-go's currentMs() return ms (for the next ~0.9 ms).
func setClock(ms uint32) {
	refTime = time.Now().Add(-(time.Duration(ms)*time.Millisecond + 50*time.Microsecond))
}

// clockHeld reports whether currentMs() still returns ms.
func clockHeld(ms uint32) bool {
	return uint32(time.Since(refTime)/time.Millisecond) == ms
}

type op struct {
	Op         string   `json:"op"` // send | input | flush | recv
	Now        uint32   `json:"now"`
	Data       string   `json:"data,omitempty"` // hex: bytes sent or input
	Regular    bool     `json:"regular,omitempty"`
	AckNoDelay bool     `json:"ack_no_delay,omitempty"`
	Full       bool     `json:"full,omitempty"` // flush: FULL (else ACKONLY)
	Ret        int      `json:"ret"`
	Crc        uint32   `json:"crc,omitempty"` // recv: CRC32 of the bytes read
	Out        []string `json:"out,omitempty"` // hex datagrams written during the call
	WaitSnd    int      `json:"wait_snd"`
}

type config struct {
	Conv    uint32 `json:"conv"`
	NoDelay [4]int `json:"nodelay"`
	Wnd     [2]int `json:"wnd"`
	Mtu     int    `json:"mtu"`
	Stream  bool   `json:"stream"`
}

type trace struct {
	Name   string `json:"name"`
	Config config `json:"config"`
	Ops    []op   `json:"ops"`
}

type engine struct {
	k      *kcp.KCP
	outs   [][]byte
	tr     *trace
	broken *bool
}

func newEngine(name string, c config, broken *bool) *engine {
	e := &engine{tr: &trace{Name: name, Config: c}, broken: broken}
	e.k = kcp.NewKCP(c.Conv, func(buf []byte, size int) {
		if size > 0 {
			e.outs = append(e.outs, append([]byte(nil), buf[:size]...))
		}
	})
	e.k.NoDelay(c.NoDelay[0], c.NoDelay[1], c.NoDelay[2], c.NoDelay[3])
	e.k.WndSize(c.Wnd[0], c.Wnd[1])
	e.k.SetMtu(c.Mtu)
	if c.Stream {
		// KCP.stream is unexported (UDPSession.SetStreamMode sets it).
		f := reflect.ValueOf(e.k).Elem().FieldByName("stream")
		*(*int32)(unsafe.Pointer(f.UnsafeAddr())) = 1
	}
	return e
}

func (e *engine) record(o op) [][]byte {
	out := e.outs
	e.outs = nil
	for _, d := range out {
		o.Out = append(o.Out, hex.EncodeToString(d))
	}
	o.WaitSnd = e.k.WaitSnd()
	if !clockHeld(o.Now) {
		*e.broken = true
	}
	e.tr.Ops = append(e.tr.Ops, o)
	return out
}

func (e *engine) send(now uint32, b []byte) {
	setClock(now)
	r := e.k.Send(b)
	e.record(op{Op: "send", Now: now, Data: hex.EncodeToString(b), Ret: r})
}

func (e *engine) input(now uint32, b []byte, regular, ackNoDelay bool) [][]byte {
	setClock(now)
	pt := kcp.IKCP_PACKET_REGULAR
	if !regular {
		pt = kcp.IKCP_PACKET_FEC
	}
	r := e.k.Input(b, pt, ackNoDelay)
	return e.record(op{Op: "input", Now: now, Data: hex.EncodeToString(b), Regular: regular, AckNoDelay: ackNoDelay, Ret: r})
}

func (e *engine) flush(now uint32, full bool) ([][]byte, uint32) {
	setClock(now)
	ft := kcp.IKCP_FLUSH_ACKONLY
	if full {
		ft = kcp.IKCP_FLUSH_FULL
	}
	r := kcpFlush(e.k, ft)
	return e.record(op{Op: "flush", Now: now, Full: full, Ret: int(r)}), r
}

func (e *engine) recv(now uint32, buf []byte) int {
	setClock(now)
	n := e.k.Recv(buf)
	o := op{Op: "recv", Now: now, Ret: n}
	if n > 0 {
		o.Crc = crc32.ChecksumIEEE(buf[:n])
	}
	e.record(o)
	return n
}

type packet struct {
	at   int64
	seq  int
	toB  bool
	data []byte
}

type scenario struct {
	name       string
	cfg        config
	bytes      int
	chunk      int
	loss, dup  float64
	start      uint32
	ackNoDelay bool
	seed       int64
}

// transfer moves sc.bytes from A to B over a seeded lossy, reordering,
// duplicating network; 10% of deliveries are marked as FEC-recovered.
func transfer(sc scenario) ([]*trace, bool) {
	broken := false
	a := newEngine(sc.name+"/A", sc.cfg, &broken)
	b := newEngine(sc.name+"/B", sc.cfg, &broken)
	rng := rand.New(rand.NewSource(sc.seed))
	data := make([]byte, sc.bytes)
	rng.Read(data)
	var net []packet
	seq := 0
	var t int64
	emit := func(toB bool, dgs [][]byte) {
		for _, d := range dgs {
			if rng.Float64() < sc.loss {
				continue
			}
			n := 1
			if rng.Float64() < sc.dup {
				n = 2
			}
			for i := 0; i < n; i++ {
				seq++
				net = append(net, packet{at: t + 10 + int64(rng.Intn(20)), seq: seq, toB: toB, data: d})
			}
		}
	}
	now := func() uint32 { return sc.start + uint32(t) }
	off, got := 0, 0
	nextA, nextB := int64(0), int64(0)
	buf := make([]byte, 1<<20)
	for steps := 0; got < sc.bytes && steps < 200000; steps++ {
		for off < sc.bytes && a.k.WaitSnd() < sc.cfg.Wnd[0] {
			n := 1 + rng.Intn(sc.chunk)
			if n > sc.bytes-off {
				n = sc.bytes - off
			}
			a.send(now(), data[off:off+n])
			off += n
			out, _ := a.flush(now(), true)
			emit(true, out)
		}
		sort.Slice(net, func(i, j int) bool {
			if net[i].at != net[j].at {
				return net[i].at < net[j].at
			}
			return net[i].seq < net[j].seq
		})
		for len(net) > 0 && net[0].at <= t {
			p := net[0]
			net = net[1:]
			regular := rng.Float64() >= 0.1
			if p.toB {
				emit(false, b.input(now(), p.data, regular, sc.ackNoDelay))
			} else {
				emit(true, a.input(now(), p.data, regular, sc.ackNoDelay))
			}
		}
		for {
			n := b.recv(now(), buf)
			if n < 0 {
				break
			}
			got += n
		}
		if t >= nextA {
			out, d := a.flush(now(), true)
			emit(true, out)
			nextA = t + int64(d)
		}
		if t >= nextB {
			out, d := b.flush(now(), true)
			emit(false, out)
			nextB = t + int64(d)
		}
		next := nextA
		if nextB < next {
			next = nextB
		}
		for _, p := range net {
			if p.at < next {
				next = p.at
			}
		}
		if next > t {
			t = next
		}
	}
	if got != sc.bytes {
		panic("transfer incomplete")
	}
	return []*trace{a.tr, b.tr}, broken
}

// hostile feeds one engine with data in flight random well-formed and
// malformed segments, interleaved with sends, flushes and reads.
func hostile(name string, seed int64, cfg config) ([]*trace, bool) {
	broken := false
	e := newEngine(name, cfg, &broken)
	rng := rand.New(rand.NewSource(seed))
	now := uint32(rng.Int63())
	buf := make([]byte, 1<<20)
	for i := 0; i < 20; i++ {
		e.send(now, make([]byte, 1+rng.Intn(300)))
	}
	for step := 0; step < 300; step++ {
		now += uint32(rng.Intn(60))
		switch rng.Intn(10) {
		case 0:
			e.flush(now, rng.Intn(5) != 0)
		case 1:
			e.send(now, make([]byte, 1+rng.Intn(200)))
		case 2:
			for e.recv(now, buf) >= 0 {
			}
		default:
			var d []byte
			for s := 0; s < 1+rng.Intn(5); s++ {
				cmds := []byte{81, 82, 82, 82, 83, 84, 85}
				cmd := cmds[rng.Intn(len(cmds))]
				body := 0
				if cmd == 81 {
					body = rng.Intn(40)
				}
				conv := cfg.Conv
				if rng.Intn(50) == 0 {
					conv++
				}
				ts := now - uint32(rng.Intn(300))
				if rng.Intn(10) == 0 {
					ts = rng.Uint32()
				}
				wnds := []uint16{0, 1, 5, 300}
				h := make([]byte, 24)
				le32(h[0:], conv)
				h[4] = cmd
				h[5] = byte(rng.Intn(3))
				h[6] = byte(wnds[rng.Intn(4)])
				h[7] = byte(wnds[rng.Intn(4)] >> 8)
				le32(h[8:], ts)
				le32(h[12:], uint32(rng.Intn(60)))
				le32(h[16:], uint32(rng.Intn(60)))
				l := uint32(body)
				if rng.Intn(50) == 0 {
					l = 1000
				}
				le32(h[20:], l)
				d = append(d, h...)
				d = append(d, make([]byte, body)...)
			}
			e.input(now, d, rng.Intn(5) != 0, rng.Intn(3) == 0)
		}
	}
	return []*trace{e.tr}, broken
}

func seg(conv uint32, cmd byte, wnd uint16, ts, sn, una uint32, body int) []byte {
	h := make([]byte, 24+body)
	le32(h[0:], conv)
	h[4] = cmd
	h[6], h[7] = byte(wnd), byte(wnd>>8)
	le32(h[8:], ts)
	le32(h[12:], sn)
	le32(h[16:], una)
	le32(h[20:], uint32(body))
	return h
}

// scripted runs timer-driven sequences: a zero-window probe, timeouts with
// nodelay 0 and 1 up to the dead link, and fast/early retransmits.
func scripted() ([]*trace, bool) {
	broken := false
	var all []*trace
	// Zero window: probes at +500, then +750, +1125, ...; reopened later.
	{
		c := config{Conv: 5, NoDelay: [4]int{0, 100, 0, 1}, Wnd: [2]int{32, 32}, Mtu: 1400}
		e := newEngine("probe", c, &broken)
		e.send(0, []byte("held back"))
		e.input(0, seg(5, 84, 0, 0, 0, 0, 0), true, false)
		for _, t := range []uint32{10, 509, 510, 1259, 1260, 2384, 2385, 2500} {
			e.flush(t, t%2 == 0)
		}
		e.input(2600, seg(5, 84, 3, 0, 0, 0, 0), true, false)
		e.flush(2610, true)
		all = append(all, e.tr)
	}
	// Timeouts: one segment never acknowledged, flushed every 11 ms.
	for nd := 0; nd < 2; nd++ {
		c := config{Conv: 6, NoDelay: [4]int{nd, 20, 0, 0}, Wnd: [2]int{32, 32}, Mtu: 1400}
		e := newEngine("rto", c, &broken)
		e.send(100, []byte("lost forever"))
		e.send(100, []byte("and me"))
		// An RTT sample first: 40 ms.
		e.input(100, seg(6, 84, 32, 60, 0, 0, 0), true, false)
		e.input(100, seg(6, 82, 32, 60, 99, 0, 0), true, false)
		for t := uint32(100); t < 20000; t += 11 {
			e.flush(t, true)
		}
		all = append(all, e.tr)
	}
	// Fast and early retransmits, resend 0..3, with and without congestion control.
	for resend := 0; resend < 4; resend++ {
		c := config{Conv: 7, NoDelay: [4]int{1, 10, resend, resend % 2}, Wnd: [2]int{16, 16}, Mtu: 100}
		e := newEngine("retransmit", c, &broken)
		for i := 0; i < 12; i++ {
			e.send(0, make([]byte, 60))
		}
		for t := uint32(0); t < 40; t += 10 {
			e.flush(t, true)
		}
		// Acks for 3, 5, 6, 7 (echoing ts 0..30): holes at 0-2 and 4.
		for i, sn := range []uint32{3, 5, 6, 7} {
			e.input(45+uint32(i), seg(7, 82, 16, uint32(i)*10, sn, 0, 0), true, false)
		}
		e.send(50, make([]byte, 60))
		e.input(60, seg(7, 82, 16, 30, 8, 0, 0), true, false)
		e.input(61, seg(7, 82, 16, 30, 9, 3, 0), false, false)
		for t := uint32(70); t < 400; t += 10 {
			e.flush(t, true)
		}
		all = append(all, e.tr)
	}
	return all, broken
}

func le32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func write(t *testing.T, file string, gen func() ([]*trace, bool)) {
	for attempt := 0; ; attempt++ {
		trs, broken := gen()
		if broken {
			// A pause (GC) moved the clock by a millisecond mid-call; redo.
			if attempt > 20 {
				t.Fatalf("%s: clock kept slipping", file)
			}
			continue
		}
		b, err := json.Marshal(map[string]any{
			"generator": "interop/vectors/kcp_gen_test.go, kcp-go v5.6.72",
			"traces":    trs,
		})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join("..", "..", "tests", "vectors", file)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
}

func TestGenKCPTraces(t *testing.T) {
	fast := config{Conv: 0x11223344, NoDelay: [4]int{1, 10, 2, 1}, Wnd: [2]int{64, 64}, Mtu: 200, Stream: true}
	normal := config{Conv: 0x55667788, NoDelay: [4]int{0, 40, 0, 0}, Wnd: [2]int{32, 128}, Mtu: 300}
	write(t, "kcp_trace_fast_stream.json", func() ([]*trace, bool) {
		return transfer(scenario{name: "fast_stream", cfg: fast, bytes: 24000, chunk: 900, loss: 0.15, dup: 0.03, start: 1000, seed: 1})
	})
	write(t, "kcp_trace_normal_message_wrap.json", func() ([]*trace, bool) {
		return transfer(scenario{name: "normal_message_wrap", cfg: normal, bytes: 24000, chunk: 2000, loss: 0.2, dup: 0.03, start: 0xFFFFF000, ackNoDelay: true, seed: 2})
	})
	write(t, "kcp_trace_scripted.json", scripted)
	write(t, "kcp_trace_hostile.json", func() ([]*trace, bool) {
		var all []*trace
		broken := false
		for i := int64(0); i < 6; i++ {
			c := config{Conv: 9, NoDelay: [4]int{int(i % 2), 10, int(i % 4), int(i/2) % 2}, Wnd: [2]int{[]int{4, 32, 200}[i%3], []int{4, 32, 200}[i%3]}, Mtu: 200, Stream: i%2 == 0}
			trs, b := hostile("hostile", i, c)
			all = append(all, trs...)
			broken = broken || b
		}
		return all, broken
	})
}

// BenchmarkGoAckWithHole is the kcp-go side of the Rust bench
// `ack_with_hole/N` (benches/kcp.rs): N segments in flight, the first one
// lost, one ACK datagram per iteration for sn 1..N-1 in turn.
//
//	cd interop && go test ./vectors -run XXX -bench GoAckWithHole
func BenchmarkGoAckWithHole(b *testing.B) {
	for _, n := range []int{1024, 32768} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			k := kcp.NewKCP(1, func([]byte, int) {})
			k.NoDelay(1, 10, 2, 1)
			k.WndSize(n, n)
			seg := make([]byte, 1376)
			for i := 0; i < n; i++ {
				k.Send(seg)
			}
			setClock(0)
			w := make([]byte, 24)
			le32(w[0:], 1)
			w[4] = 84
			w[6], w[7] = 0xff, 0xff
			k.Input(w, kcp.IKCP_PACKET_REGULAR, false)
			kcpFlush(k, kcp.IKCP_FLUSH_FULL)
			if k.WaitSnd() != n {
				b.Fatal("not all in flight")
			}
			setClock(1)
			ack := make([]byte, 24)
			le32(ack[0:], 1)
			ack[4] = 82
			ack[6], ack[7] = 0xff, 0xff
			sn := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sn = sn%(n-1) + 1
				le32(ack[12:], uint32(sn))
				setClock(1) // no timeouts, as in the Rust bench
				k.Input(ack, kcp.IKCP_PACKET_REGULAR, false)
			}
		})
	}
}
