package peer

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// rrClient sends --count requests of --chunk payload bytes one at a time and
// waits for each echo: request/response latency for interop/bench. The RESULT
// line carries p50_us, p99_us and max_us.
func (p *runner) rrClient() result {
	s, err := p.dial()
	if err != nil {
		return p.setupFailed("dial %s: %v", p.cfg.Addr, err)
	}
	defer s.Close()
	msg := make([]byte, p.cfg.Chunk)
	NewPayload(p.cfg.Seed).Fill(msg)
	back := make([]byte, p.cfg.Chunk)
	lat := make([]time.Duration, 0, p.cfg.Count)
	var r result
	for i := 0; i < p.cfg.Count; i++ {
		t0 := time.Now()
		if _, err := s.Write(msg); err != nil {
			r.reason = fmt.Sprintf("request %d: %v", i, err)
			return r
		}
		if _, err := io.ReadFull(s, back); err != nil {
			r.reason = fmt.Sprintf("response %d: %v", i, err)
			return r
		}
		lat = append(lat, time.Since(t0))
		r.crc = crc32.Update(r.crc, crc32.IEEETable, back)
		r.bytes += int64(len(back))
		if !bytes.Equal(back, msg) {
			r.reason = fmt.Sprintf("response %d differs from the request", i)
			return r
		}
	}
	r.ok = true
	r.extra = latencyFields(lat)
	return r
}

// latencyFields formats the percentiles the bench driver reads.
func latencyFields(lat []time.Duration) string {
	if len(lat) == 0 {
		return "count=0"
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q int) time.Duration {
		i := (len(lat)*q + 99) / 100
		return lat[max(0, min(len(lat)-1, i-1))]
	}
	return fmt.Sprintf("count=%d p50_us=%d p99_us=%d max_us=%d", len(lat),
		pct(50).Microseconds(), pct(99).Microseconds(), lat[len(lat)-1].Microseconds())
}

// idleClient opens --count sessions, echoes one --chunk message on each, prints
// READY, then keeps them open (idle) until stdin closes or the timeout.
func (p *runner) idleClient() result {
	msg := make([]byte, p.cfg.Chunk)
	NewPayload(p.cfg.Seed).Fill(msg)
	var mu sync.Mutex
	sessions := make([]*kcp.UDPSession, 0, p.cfg.Count)
	var firstErr error
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			back := make([]byte, len(msg))
			for {
				mu.Lock()
				if next >= p.cfg.Count || firstErr != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				s, err := p.dial()
				if err == nil {
					_, err = s.Write(msg)
				}
				if err == nil {
					_, err = io.ReadFull(s, back)
				}
				if err == nil && !bytes.Equal(back, msg) {
					err = fmt.Errorf("echo differs")
				}
				mu.Lock()
				if s != nil {
					sessions = append(sessions, s)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	r := result{bytes: int64(len(sessions)) * int64(len(msg)), extra: fmt.Sprintf("sessions=%d", len(sessions))}
	if firstErr != nil {
		r.reason = firstErr.Error()
		return r
	}
	p.println(fmt.Sprintf("READY %d", len(sessions)))
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, p.stdin)
		close(stop)
	}()
	select {
	case <-stop:
		r.ok = true
	case <-time.After(time.Until(p.deadline)):
		r.reason = "timeout while idling"
	}
	return r
}
