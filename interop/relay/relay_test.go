package relay

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// echoServer answers every datagram with the same bytes.
func echoServer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP(buf[:n], from)
		}
	}()
	return c
}

func TestRelayForwardsBothWaysAndCounts(t *testing.T) {
	srv := echoServer(t)
	r, err := New(Config{Upstream: srv.LocalAddr().(*net.UDPAddr), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cl, err := net.DialUDP("udp", nil, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	buf := make([]byte, 2048)
	for i := 0; i < 20; i++ {
		msg := []byte{byte(i), 1, 2, 3}
		if _, err := cl.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := cl.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("datagram %d: got %x want %x", i, buf[:n], msg)
		}
	}
	// The relay bumps Forwarded after its write returns, so the echo can reach
	// the client before the counter moves: wait (bounded) for it to settle.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if r.Stats(ServerToClient).Forwarded == 20 {
			break
		}
	}
	for _, d := range []Direction{ClientToServer, ServerToClient} {
		if s := r.Stats(d); s.Received != 20 || s.Forwarded != 20 || s.Dropped != 0 || s.MaxSize != 4 {
			t.Errorf("%v: %v, want 20 received and forwarded, max size 4", d, s)
		}
	}
}

// sendMany pushes n datagrams through a relay with the given impairment into
// a sink that only counts, and returns the relay's client->server counters.
func sendMany(t *testing.T, imp Impairment, seed int64, n int) (Counters, int) {
	st, got, _ := sendChecked(t, Config{Seed: seed, Up: imp}, n, nil)
	return st, got
}

// sendChecked is sendMany with a whole config; it also returns how many of
// the datagrams the sink got satisfy bad (nil: none).
func sendChecked(t *testing.T, cfg Config, n int, bad func([]byte) bool) (Counters, int, int) {
	t.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	_ = sink.SetReadBuffer(4 << 20)
	cfg.Upstream = sink.LocalAddr().(*net.UDPAddr)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.DialUDP("udp", nil, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		if _, err := cl.Write([]byte{byte(i), byte(i >> 8), 0xee}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 { // stay well inside socket buffers
			time.Sleep(time.Millisecond)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	// Wait until every datagram is accounted for, delayed ones included.
	for time.Now().Before(deadline) {
		s := r.Stats(ClientToServer)
		if s.Received == uint64(n) && s.Forwarded == s.Received-s.Dropped+s.Duplicated {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Close() // waits for delayed sends
	got, gotBad := 0, 0
	buf := make([]byte, 64)
	for {
		_ = sink.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		m, err := sink.Read(buf)
		if err != nil {
			break
		}
		got++
		if bad != nil && bad(buf[:m]) {
			gotBad++
		}
	}
	return r.Stats(ClientToServer), got, gotBad
}

func TestRelayImpairmentRatesAndSeed(t *testing.T) {
	imp := Impairment{Loss: 0.2, Dup: 0.1, Reorder: 0.1, MaxDelay: 5 * time.Millisecond}
	a, gotA := sendMany(t, imp, 42, 2000)
	b, _ := sendMany(t, imp, 42, 2000)
	if a.Received != 2000 {
		t.Fatalf("relay saw %d of 2000 datagrams", a.Received)
	}
	if a != b {
		t.Errorf("same seed gave different decisions: %v vs %v", a, b)
	}
	if a.Dropped < 300 || a.Dropped > 500 {
		t.Errorf("dropped %d of 2000 at 20%% loss", a.Dropped)
	}
	if a.Duplicated < 120 || a.Duplicated > 280 {
		t.Errorf("duplicated %d of 2000 at 10%%", a.Duplicated)
	}
	if a.Reordered < 120 || a.Reordered > 280 {
		t.Errorf("reordered %d of 2000 at 10%%", a.Reordered)
	}
	if want := a.Received - a.Dropped + a.Duplicated; a.Forwarded != want {
		t.Errorf("forwarded %d, want received-dropped+duplicated = %d", a.Forwarded, want)
	}
	if uint64(gotA) != a.Forwarded {
		t.Errorf("sink got %d datagrams, relay forwarded %d", gotA, a.Forwarded)
	}
	c, _ := sendMany(t, imp, 43, 2000)
	if c == a {
		t.Errorf("different seeds gave identical decisions: %v", c)
	}
}

// Check's verdicts are counted once per datagram received and once per copy
// forwarded, whatever the impairment does to it afterwards.
func TestRelayCountsInvalidDatagrams(t *testing.T) {
	bad := func(b []byte) bool { return b[0]%7 == 0 }
	imp := Impairment{Loss: 0.3, Dup: 0.2, Reorder: 0.1, MaxDelay: 5 * time.Millisecond, Corrupt: 0.1}
	cfg := Config{Seed: 7, Up: imp, Check: func(b []byte) bool { return !bad(b) }}
	s, got, gotBad := sendChecked(t, cfg, 2000, bad)
	wantInvalid := 0
	for i := 0; i < 2000; i++ {
		if byte(i)%7 == 0 {
			wantInvalid++
		}
	}
	if s.Invalid != uint64(wantInvalid) {
		t.Errorf("invalid=%d, want %d (every datagram whose first byte is a multiple of 7)", s.Invalid, wantInvalid)
	}
	if s.InvalidForwarded != uint64(gotBad) || gotBad == 0 {
		t.Errorf("invalid_fwd=%d, the sink got %d such datagrams", s.InvalidForwarded, gotBad)
	}
	if uint64(got) != s.Forwarded || s.InvalidForwarded >= s.Invalid+s.Duplicated {
		t.Errorf("counters do not add up: %v, sink got %d", s, got)
	}
}
