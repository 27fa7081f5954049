// Package relay is a loopback UDP relay that sits between a KCP client and a
// server and impairs the traffic with seeded loss, reordering, duplication
// and (for the harness's self-check) corruption.
//
// Clients send to Relay.Addr(); for every client address the relay opens its
// own upstream socket to the server, so the server sees one distinct address
// per client, exactly as without the relay.
package relay

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction names one way through the relay.
type Direction int

const (
	// ClientToServer is traffic from the dialing side to the listener.
	ClientToServer Direction = iota
	// ServerToClient is traffic from the listener back to the dialing side.
	ServerToClient
)

func (d Direction) String() string {
	if d == ClientToServer {
		return "client->server"
	}
	return "server->client"
}

// Impairment says what happens to datagrams travelling one way. Every
// probability is per datagram, in [0, 1].
type Impairment struct {
	Loss     float64       // drop it
	Dup      float64       // send it twice
	Reorder  float64       // hold it back by a random delay in (0, MaxDelay]
	MaxDelay time.Duration // upper bound of the reorder delay (default 20 ms)
	// Corrupt flips the last byte of the datagram (the harness's self-check
	// that a broken peer makes cells fail; see matrix_test.go).
	Corrupt float64
}

// Config configures both directions of a relay.
type Config struct {
	Upstream *net.UDPAddr // the server
	Seed     int64        // seeds every random decision
	Up       Impairment   // client -> server
	Down     Impairment   // server -> client
	// Check, if set, tells whether a datagram as received passes the
	// session's CRC/AEAD check; the relay counts those that do not. It is an
	// opinion on every datagram independent of either peer's own code, and
	// it runs before any impairment (so Corrupt does not count). Called from
	// several goroutines at once.
	Check func(pkt []byte) bool
}

// Counters of one direction.
type Counters struct {
	Received, Forwarded, Dropped, Duplicated, Reordered, Corrupted uint64
	MaxSize                                                        uint64 // largest datagram received, in bytes
	// Invalid datagrams (Config.Check failed) received, and the copies of
	// them forwarded (what the receiver can have counted).
	Invalid, InvalidForwarded uint64
}

func (c Counters) String() string {
	return fmt.Sprintf("recv=%d fwd=%d drop=%d dup=%d reorder=%d corrupt=%d maxsize=%d invalid=%d invalid_fwd=%d",
		c.Received, c.Forwarded, c.Dropped, c.Duplicated, c.Reordered, c.Corrupted, c.MaxSize,
		c.Invalid, c.InvalidForwarded)
}

type counters struct {
	received, forwarded, dropped, duplicated, reordered, corrupted, maxSize atomic.Uint64
	invalid, invalidForwarded                                               atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{c.received.Load(), c.forwarded.Load(), c.dropped.Load(),
		c.duplicated.Load(), c.reordered.Load(), c.corrupted.Load(), c.maxSize.Load(),
		c.invalid.Load(), c.invalidForwarded.Load()}
}

// way is one direction: its impairment, its own seeded RNG and counters.
type way struct {
	imp   Impairment
	mu    sync.Mutex
	rng   *rand.Rand
	stats counters
}

// Relay forwards datagrams between clients and one upstream server.
type Relay struct {
	cfg    Config
	front  *net.UDPConn // clients talk to this
	ways   [2]*way
	mu     sync.Mutex
	flows  map[string]*net.UDPConn // client address -> upstream socket
	closed chan struct{}
	wg     sync.WaitGroup
	timers sync.WaitGroup // delayed sends still pending
}

// New starts a relay listening on loopback, on an ephemeral port: on the
// upstream's own address when that is a loopback address (so a harness that
// gives every cell its own 127.x.y.z keeps each cell's traffic apart), else
// on 127.0.0.1 or ::1 of the upstream's family.
func New(cfg Config) (*Relay, error) {
	if cfg.Upstream == nil {
		return nil, errors.New("relay: no upstream address")
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: loopbackFor(cfg.Upstream)})
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, front: front, flows: map[string]*net.UDPConn{}, closed: make(chan struct{})}
	for i, imp := range []Impairment{cfg.Up, cfg.Down} {
		if imp.MaxDelay <= 0 {
			imp.MaxDelay = 20 * time.Millisecond
		}
		// Distinct streams per direction, both derived from the one seed.
		r.ways[i] = &way{imp: imp, rng: rand.New(rand.NewSource(cfg.Seed*2 + int64(i)))}
	}
	_ = front.SetReadBuffer(4 << 20)
	_ = front.SetWriteBuffer(4 << 20)
	r.wg.Add(1)
	go r.frontLoop()
	return r, nil
}

// loopbackFor is the loopback address of the upstream's family: the relay
// never leaves the host.
func loopbackFor(upstream *net.UDPAddr) net.IP {
	if upstream.IP.IsLoopback() {
		return upstream.IP
	}
	if upstream.IP.To4() == nil {
		return net.IPv6loopback
	}
	return net.IPv4(127, 0, 0, 1)
}

// Addr is where clients must send.
func (r *Relay) Addr() *net.UDPAddr { return r.front.LocalAddr().(*net.UDPAddr) }

// Flows is how many client addresses have sent to the relay: one per client
// session (every session has its own socket), more if something foreign
// reached the relay's port.
func (r *Relay) Flows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

// Stats returns the counters of one direction.
func (r *Relay) Stats(d Direction) Counters { return r.ways[d].stats.snapshot() }

// Close stops the relay and waits for its goroutines and pending sends.
func (r *Relay) Close() error {
	select {
	case <-r.closed:
		return nil
	default:
	}
	close(r.closed)
	err := r.front.Close()
	r.mu.Lock()
	for _, c := range r.flows {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.timers.Wait()
	return err
}

func (r *Relay) frontLoop() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up, err := r.flow(from)
		if err != nil {
			continue
		}
		r.pass(r.ways[ClientToServer], buf[:n], func(b []byte) { _, _ = up.Write(b) })
	}
}

// flow returns the upstream socket for a client, creating it on first use.
func (r *Relay) flow(client *net.UDPAddr) (*net.UDPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := client.String()
	if c, ok := r.flows[key]; ok {
		return c, nil
	}
	select {
	case <-r.closed:
		return nil, net.ErrClosed
	default:
	}
	up, err := net.DialUDP("udp", &net.UDPAddr{IP: loopbackFor(r.cfg.Upstream)}, r.cfg.Upstream)
	if err != nil {
		return nil, err
	}
	_ = up.SetReadBuffer(4 << 20)
	_ = up.SetWriteBuffer(4 << 20)
	r.flows[key] = up
	clientAddr := *client
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				// A connected UDP socket reports ICMP unreachable as a read
				// error while the server is not (yet, or any more) there;
				// only a closed socket ends the flow.
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			r.pass(r.ways[ServerToClient], buf[:n], func(b []byte) { _, _ = r.front.WriteToUDP(b, &clientAddr) })
		}
	}()
	return up, nil
}

// pass applies one direction's impairment to a datagram and sends what is
// left. All random draws happen in a fixed order under the way's lock, so a
// seed replays the same decisions for the same datagram sequence.
func (r *Relay) pass(w *way, pkt []byte, send func([]byte)) {
	w.stats.received.Add(1)
	for size := uint64(len(pkt)); ; {
		cur := w.stats.maxSize.Load()
		if size <= cur || w.stats.maxSize.CompareAndSwap(cur, size) {
			break
		}
	}
	invalid := r.cfg.Check != nil && !r.cfg.Check(pkt)
	if invalid {
		w.stats.invalid.Add(1)
	}
	w.mu.Lock()
	drop := w.rng.Float64() < w.imp.Loss
	dup := w.rng.Float64() < w.imp.Dup
	reorder := w.rng.Float64() < w.imp.Reorder
	delay := time.Duration(w.rng.Int63n(int64(w.imp.MaxDelay))) + 1
	corrupt := w.rng.Float64() < w.imp.Corrupt
	w.mu.Unlock()
	if drop {
		w.stats.dropped.Add(1)
		return
	}
	b := append([]byte(nil), pkt...)
	if corrupt && len(b) > 0 {
		b[len(b)-1] ^= 0x5a
		w.stats.corrupted.Add(1)
	}
	copies := 1
	if dup {
		copies = 2
		w.stats.duplicated.Add(1)
	}
	if reorder {
		w.stats.reordered.Add(1)
		r.timers.Add(1)
		time.AfterFunc(delay, func() {
			defer r.timers.Done()
			select {
			case <-r.closed:
				return
			default:
			}
			for i := 0; i < copies; i++ {
				w.stats.forwarded.Add(1)
				if invalid {
					w.stats.invalidForwarded.Add(1)
				}
				send(b)
			}
		})
		return
	}
	// Counted before the send: once it is on the wire the answer can come
	// back and a reader of the counters must already see it forwarded.
	for i := 0; i < copies; i++ {
		w.stats.forwarded.Add(1)
		if invalid {
			w.stats.invalidForwarded.Add(1)
		}
		send(b)
	}
}
