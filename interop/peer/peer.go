// Package peer is the Go side of the interop harness: a small program built on
// kcp-go's public API only, implementing the peer CLI contract documented in
// interop/README.md. The Rust example examples/kcp_peer.rs implements the same
// contract, so the harness can put either implementation in either slot.
package peer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// Exit codes of the peer program.
const (
	ExitOK    = 0 // the role completed and every byte matched
	ExitFail  = 1 // transfer failed: mismatch, timeout, I/O error
	ExitUsage = 2 // bad arguments or setup error (bind, cipher, mtu)
)

// Roles of the peer CLI contract.
const (
	RoleEchoServer = "echo-server"
	RoleSink       = "sink"
	RoleEchoClient = "echo-client"
	RoleSource     = "source"
	// RoleRRClient and RoleIdleClient are benchmark roles (interop/bench):
	// request/response latency, and many idle sessions on one listener.
	RoleRRClient   = "rr-client"
	RoleIdleClient = "idle-client"
	// RoleManyClient runs --count sessions at once, each echoing --bytes
	// (interop/bench: many sessions on one listener).
	RoleManyClient = "many-client"
)

// byeByte is what the source sends after it has read the sink's CRC ack, so
// the sink knows its ack arrived and can exit without lingering.
const byeByte = '.'

// sinkLinger bounds how long a sink waits for the bye byte after acking: the
// bye itself is not retransmitted once the source has exited, so on a lossy
// link it may never come.
const sinkLinger = 3 * time.Second

// Config is the parsed command line.
type Config struct {
	Role         string
	Addr         string
	Crypt        string
	Key          string
	DataShards   int
	ParityShards int
	Mode         string
	MTU          int
	SndWnd       int
	RcvWnd       int
	Stream       bool
	Bytes        int64
	Chunk        int
	Seed         uint64
	Timeout      time.Duration
	SockBuf      int
	AckNoDelay   bool
	Count        int
	// SessionTimeout bounds each session of the read-client and read-server
	// roles.
	SessionTimeout time.Duration
}

// modes are kcptun's presets (docs/wire.md §7.3): nodelay, interval, resend, nc.
var modes = map[string][4]int{
	"normal": {0, 40, 2, 1},
	"fast":   {0, 30, 2, 1},
	"fast2":  {1, 20, 2, 1},
	"fast3":  {1, 10, 2, 1},
}

// ParseArgs parses the peer command line (without the program name).
func ParseArgs(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("peer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Role, "role", "", "echo-server | sink | echo-client | source")
	fs.StringVar(&c.Addr, "addr", "", "listen address (servers) or remote address (clients), HOST:PORT")
	fs.StringVar(&c.Crypt, "crypt", "aes", "kcptun cipher name")
	fs.StringVar(&c.Key, "key", DefaultKey, "passphrase, derived as kcptun does")
	fs.IntVar(&c.DataShards, "datashard", 0, "FEC data shards (0 = off)")
	fs.IntVar(&c.ParityShards, "parityshard", 0, "FEC parity shards (0 = off)")
	fs.StringVar(&c.Mode, "mode", "fast", "normal | fast | fast2 | fast3")
	fs.IntVar(&c.MTU, "mtu", 1350, "maximum UDP payload")
	fs.IntVar(&c.SndWnd, "sndwnd", 1024, "send window (packets)")
	fs.IntVar(&c.RcvWnd, "rcvwnd", 1024, "receive window (packets)")
	stream := fs.Bool("stream", false, "stream mode (default)")
	message := fs.Bool("message", false, "message mode")
	fs.Int64Var(&c.Bytes, "bytes", 0, "payload size")
	fs.IntVar(&c.Chunk, "chunk", 65536, "write size")
	fs.Uint64Var(&c.Seed, "seed", 1, "payload PRNG seed")
	timeout := fs.Float64("timeout", 60, "give up after this many seconds")
	fs.IntVar(&c.SockBuf, "sockbuf", 4<<20, "socket buffer size (Go peer extension)")
	fs.BoolVar(&c.AckNoDelay, "acknodelay", false, "SetACKNoDelay (Go peer extension)")
	fs.IntVar(&c.Count, "count", 1000, "requests (rr-client) or sessions (idle-client, close-semantics roles)")
	sessionTimeout := fs.Float64("session-timeout", 5, "read-client/read-server: give up on one session after this many seconds")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *stream && *message {
		return nil, errors.New("--stream and --message are exclusive")
	}
	c.Stream = !*message
	c.Timeout = time.Duration(*timeout * float64(time.Second))
	c.SessionTimeout = time.Duration(*sessionTimeout * float64(time.Second))
	switch c.Role {
	case RoleEchoServer, RoleSink, RoleEchoClient, RoleSource, RoleRRClient, RoleIdleClient, RoleManyClient,
		RoleWriteCloseServer, RoleWriteCloseClient, RoleReadServer, RoleReadClient:
	default:
		return nil, fmt.Errorf("unknown --role %q", c.Role)
	}
	if c.Addr == "" {
		return nil, errors.New("--addr is required")
	}
	if _, ok := modes[c.Mode]; !ok {
		return nil, fmt.Errorf("unknown --mode %q", c.Mode)
	}
	if c.Bytes < 0 || c.Chunk <= 0 || c.Timeout <= 0 || c.SessionTimeout <= 0 || c.DataShards < 0 || c.ParityShards < 0 {
		return nil, errors.New("--bytes, --chunk, --timeout, --datashard, --parityshard must not be negative (chunk, timeout > 0)")
	}
	return c, nil
}

// result is what a role reports in its RESULT line.
type result struct {
	bytes  int64
	crc    uint32
	ok     bool
	extra  string // further key=value fields
	reason string // why ok=false; printed last, may contain spaces
	setup  bool   // failed before any transfer: exit with ExitUsage
}

// Main runs the peer and returns its exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := ParseArgs(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "peer:", err)
		return ExitUsage
	}
	block, err := NewBlockCrypt(cfg.Crypt, cfg.Key)
	if err != nil {
		fmt.Fprintln(stderr, "peer:", err)
		return ExitUsage
	}
	p := &runner{cfg: cfg, block: block, stdin: stdin, out: stdout, errw: stderr,
		deadline: time.Now().Add(cfg.Timeout)}

	done := make(chan result, 1)
	go func() {
		switch cfg.Role {
		case RoleEchoServer:
			done <- p.echoServer()
		case RoleSink:
			done <- p.sink()
		case RoleEchoClient:
			done <- p.echoClient()
		case RoleSource:
			done <- p.source()
		case RoleRRClient:
			done <- p.rrClient()
		case RoleIdleClient:
			done <- p.idleClient()
		case RoleManyClient:
			done <- p.manyClient()
		case RoleWriteCloseServer:
			done <- p.writeCloseServer()
		case RoleWriteCloseClient:
			done <- p.writeCloseClient()
		case RoleReadServer:
			done <- p.readServer()
		case RoleReadClient:
			done <- p.readClient()
		}
	}()
	// Watchdog: the roles honour the deadline through session deadlines; this
	// catches anything that still blocks (a dial, an accept, a bug).
	var res result
	select {
	case res = <-done:
	case <-time.After(cfg.Timeout + 2*time.Second):
		res = result{ok: false, reason: fmt.Sprintf("watchdog: no result after %v", cfg.Timeout)}
	}
	p.report(res)
	if res.setup {
		return ExitUsage
	}
	if res.ok {
		return ExitOK
	}
	return ExitFail
}

type runner struct {
	cfg      *Config
	block    kcp.BlockCrypt
	stdin    io.Reader
	out      io.Writer
	errw     io.Writer
	deadline time.Time
	outMu    sync.Mutex
}

func (p *runner) println(s string) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	fmt.Fprintln(p.out, s)
}

func (p *runner) report(r result) {
	var b strings.Builder
	fmt.Fprintf(&b, "RESULT role=%s bytes=%d crc32=%08x ok=%t", p.cfg.Role, r.bytes, r.crc, r.ok)
	if r.extra != "" {
		b.WriteString(" " + r.extra)
	}
	if r.reason != "" {
		b.WriteString(" reason=" + strings.ReplaceAll(r.reason, "\n", " "))
	}
	p.println(b.String())
	b.Reset()
	b.WriteString("SNMP")
	snmp := kcp.DefaultSnmp.Copy()
	for i, name := range snmp.Header() {
		fmt.Fprintf(&b, " %s=%s", name, snmp.ToSlice()[i])
	}
	p.println(b.String())
}

// setupFailed reports a failure before any transfer; Main exits with ExitUsage.
func (p *runner) setupFailed(format string, args ...any) result {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(p.errw, "peer:", msg)
	return result{reason: msg, setup: true}
}

// configure applies the per-session settings as kcptun does (docs/wire.md §7.4).
func (p *runner) configure(s *kcp.UDPSession) error {
	m := modes[p.cfg.Mode]
	s.SetStreamMode(p.cfg.Stream)
	s.SetWriteDelay(false)
	s.SetNoDelay(m[0], m[1], m[2], m[3])
	s.SetWindowSize(p.cfg.SndWnd, p.cfg.RcvWnd)
	if !s.SetMtu(p.cfg.MTU) {
		return fmt.Errorf("SetMtu(%d) refused", p.cfg.MTU)
	}
	s.SetACKNoDelay(p.cfg.AckNoDelay)
	return nil
}

func (p *runner) listen() (*kcp.Listener, error) {
	l, err := kcp.ListenWithOptions(p.cfg.Addr, p.block, p.cfg.DataShards, p.cfg.ParityShards)
	if err != nil {
		return nil, err
	}
	_ = l.SetReadBuffer(p.cfg.SockBuf)
	_ = l.SetWriteBuffer(p.cfg.SockBuf)
	p.println("LISTENING " + l.Addr().String())
	return l, nil
}

func (p *runner) dial() (*kcp.UDPSession, error) {
	s, err := kcp.DialWithOptions(p.cfg.Addr, p.block, p.cfg.DataShards, p.cfg.ParityShards)
	if err != nil {
		return nil, err
	}
	if err := p.configure(s); err != nil {
		s.Close()
		return nil, err
	}
	_ = s.SetReadBuffer(p.cfg.SockBuf)
	_ = s.SetWriteBuffer(p.cfg.SockBuf)
	_ = s.SetDeadline(p.deadline)
	return s, nil
}

// echoServer echoes every session until stdin closes, a signal arrives or the
// timeout passes. Its crc32 covers all bytes it read, in read order, which is
// the concatenation of the clients' payloads when clients run one at a time.
func (p *runner) echoServer() result {
	l, err := p.listen()
	if err != nil {
		return p.setupFailed("listen %s: %v", p.cfg.Addr, err)
	}
	stop := make(chan string, 3)
	go func() {
		_, _ = io.Copy(io.Discard, p.stdin)
		stop <- "stdin closed"
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- "signal " + (<-sig).String() }()

	var mu sync.Mutex
	crc := crc32.NewIEEE()
	var total int64
	sessions := 0
	var cfgErr error
	go func() {
		for {
			s, err := l.AcceptKCP()
			if err != nil {
				return
			}
			if err := p.configure(s); err != nil {
				mu.Lock()
				cfgErr = err
				mu.Unlock()
				s.Close()
				continue
			}
			mu.Lock()
			sessions++
			mu.Unlock()
			go func() {
				buf := make([]byte, 1<<16)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						mu.Lock()
						crc.Write(buf[:n])
						total += int64(n)
						mu.Unlock()
						if _, werr := s.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()

	var why string
	ok := true
	select {
	case why = <-stop:
	case <-time.After(time.Until(p.deadline)):
		why, ok = "timeout", false
	}
	mu.Lock()
	defer mu.Unlock()
	r := result{bytes: total, crc: crc.Sum32(), ok: ok, extra: fmt.Sprintf("sessions=%d stop=%s", sessions, strings.ReplaceAll(why, " ", "-"))}
	if !ok {
		r.reason = fmt.Sprintf("timeout after %v", p.cfg.Timeout)
	}
	if cfgErr != nil {
		r.ok, r.reason = false, cfgErr.Error()
	}
	return r
}

// verifier checks received bytes against the expected payload as they arrive.
type verifier struct {
	exp      *Payload
	buf      []byte
	crc      uint32
	got      int64
	mismatch int64 // offset of the first differing byte, -1 if none
}

func newVerifier(seed uint64) *verifier {
	return &verifier{exp: NewPayload(seed), buf: make([]byte, 1<<16), mismatch: -1}
}

func (v *verifier) add(b []byte) {
	for len(b) > 0 {
		n := min(len(b), len(v.buf))
		want := v.buf[:n]
		v.exp.Fill(want)
		if v.mismatch < 0 && !bytes.Equal(b[:n], want) {
			for i := 0; i < n; i++ {
				if b[i] != want[i] {
					v.mismatch = v.got + int64(i)
					break
				}
			}
		}
		v.crc = crc32.Update(v.crc, crc32.IEEETable, b[:n])
		v.got += int64(n)
		b = b[n:]
	}
}

// writeAll writes cfg.Bytes of the payload in cfg.Chunk sized writes and
// returns the CRC-32 of what it wrote.
func (p *runner) writeAll(s *kcp.UDPSession) (uint32, error) {
	gen := NewPayload(p.cfg.Seed)
	buf := make([]byte, p.cfg.Chunk)
	var crc uint32
	for left := p.cfg.Bytes; left > 0; {
		n := int(min(left, int64(len(buf))))
		gen.Fill(buf[:n])
		crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
		if _, err := s.Write(buf[:n]); err != nil {
			return crc, fmt.Errorf("write at offset %d: %w", p.cfg.Bytes-left, err)
		}
		left -= int64(n)
	}
	return crc, nil
}

// readVerify reads exactly cfg.Bytes and checks them against the payload.
func (p *runner) readVerify(s *kcp.UDPSession) (*verifier, error) {
	v := newVerifier(p.cfg.Seed)
	buf := make([]byte, 1<<16)
	for v.got < p.cfg.Bytes {
		n, err := s.Read(buf[:min(int64(len(buf)), p.cfg.Bytes-v.got)])
		v.add(buf[:n])
		if err != nil {
			return v, fmt.Errorf("read after %d of %d bytes: %w", v.got, p.cfg.Bytes, err)
		}
	}
	return v, nil
}

func verdict(v *verifier, want int64, err error) result {
	r := result{bytes: v.got, crc: v.crc, ok: err == nil && v.mismatch < 0 && v.got == want}
	switch {
	case err != nil:
		r.reason = err.Error()
	case v.mismatch >= 0:
		r.reason = fmt.Sprintf("payload mismatch at byte offset %d", v.mismatch)
	}
	if v.mismatch >= 0 {
		r.extra = fmt.Sprintf("mismatch_at=%d", v.mismatch)
	}
	return r
}

func (p *runner) echoClient() result {
	s, err := p.dial()
	if err != nil {
		return p.setupFailed("dial %s: %v", p.cfg.Addr, err)
	}
	defer s.Close()
	t0 := time.Now()
	werr := make(chan error, 1)
	go func() {
		_, err := p.writeAll(s)
		werr <- err
	}()
	v, err := p.readVerify(s)
	elapsed := time.Since(t0)
	if err == nil {
		err = <-werr
	}
	r := verdict(v, p.cfg.Bytes, err)
	r.extra = strings.TrimSpace(fmt.Sprintf("%s elapsed_us=%d", r.extra, elapsed.Microseconds()))
	return r
}

func (p *runner) sink() result {
	l, err := p.listen()
	if err != nil {
		return p.setupFailed("listen %s: %v", p.cfg.Addr, err)
	}
	defer l.Close()
	_ = l.SetReadDeadline(p.deadline)
	s, err := l.AcceptKCP()
	if err != nil {
		return result{reason: fmt.Sprintf("accept: %v", err)}
	}
	defer s.Close()
	if err := p.configure(s); err != nil {
		return result{reason: err.Error()}
	}
	_ = s.SetDeadline(p.deadline)
	v, err := p.readVerify(s)
	r := verdict(v, p.cfg.Bytes, err)
	if err != nil {
		return r
	}
	var ack [4]byte
	binary.LittleEndian.PutUint32(ack[:], v.crc)
	if _, err := s.Write(ack[:]); err != nil {
		r.ok, r.reason = false, fmt.Sprintf("writing the ack: %v", err)
		return r
	}
	// Stay until the ack has surely arrived (the source answers it), or the
	// linger runs out: with no close packet in KCP this is the only signal.
	_ = s.SetReadDeadline(minTime(p.deadline, time.Now().Add(sinkLinger)))
	var bye [1]byte
	if n, _ := s.Read(bye[:]); n == 1 && bye[0] == byeByte {
		r.extra = strings.TrimSpace(r.extra + " bye=true")
	} else {
		r.extra = strings.TrimSpace(r.extra + " bye=false")
	}
	return r
}

func (p *runner) source() result {
	s, err := p.dial()
	if err != nil {
		return p.setupFailed("dial %s: %v", p.cfg.Addr, err)
	}
	defer s.Close()
	t0 := time.Now()
	crc, err := p.writeAll(s)
	r := result{bytes: p.cfg.Bytes, crc: crc}
	if err != nil {
		r.reason = err.Error()
		return r
	}
	var ack [4]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		r.reason = fmt.Sprintf("waiting for the sink's ack: %v", err)
		return r
	}
	peerCRC := binary.LittleEndian.Uint32(ack[:])
	// elapsed_us: first write to the sink's ack (interop/bench's throughput).
	r.extra = fmt.Sprintf("peer_crc32=%08x elapsed_us=%d", peerCRC, time.Since(t0).Microseconds())
	r.ok = peerCRC == crc
	if !r.ok {
		r.reason = "sink's CRC-32 differs from the bytes sent"
	}
	_, _ = s.Write([]byte{byeByte})
	return r
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
