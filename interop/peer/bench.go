package peer

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// The slowest 5% in full, so the driver can pool runs: a p99 of one run
	// of 1000 lossy requests is its 10th-slowest, too few to compare.
	tail := make([]string, 0, (len(lat)+19)/20)
	for i := len(lat) - 1; i >= 0 && len(tail) < cap(tail); i-- {
		tail = append(tail, strconv.FormatInt(lat[i].Microseconds(), 10))
	}
	return fmt.Sprintf("count=%d p50_us=%d p99_us=%d max_us=%d tail_us=%s", len(lat),
		pct(50).Microseconds(), pct(99).Microseconds(), lat[len(lat)-1].Microseconds(),
		strings.Join(tail, ","))
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

// manyClient opens --count sessions at once; each writes --bytes of its own
// payload (seed --seed + index) in --chunk writes while reading the echo
// back and checking it. The RESULT line carries sessions, failures,
// elapsed_ms (first dial to last echo byte) and max_stall_ms: the longest
// any session waited for its next echo bytes (from its start to the first
// read included). ok only when every session echoed every byte exactly.
func (p *runner) manyClient() result {
	n, size := p.cfg.Count, p.cfg.Bytes
	var failures, stallNs atomic.Int64
	var mu sync.Mutex
	firstErr := ""
	fail := func(i int, err error) {
		failures.Add(1)
		mu.Lock()
		if firstErr == "" {
			firstErr = fmt.Sprintf("session %d: %v", i, err)
		}
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := p.dial()
			if err != nil {
				fail(i, err)
				return
			}
			defer s.Close()
			data := Bytes(p.cfg.Seed+uint64(i), int(size))
			go func() {
				for off := 0; off < len(data); off += p.cfg.Chunk {
					if _, err := s.Write(data[off:min(off+p.cfg.Chunk, len(data))]); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 64<<10)
			got := 0
			last := time.Now()
			var worst time.Duration
			for got < len(data) {
				k, err := s.Read(buf)
				if err != nil {
					fail(i, fmt.Errorf("after %d of %d bytes: %w", got, len(data), err))
					return
				}
				if now := time.Now(); now.Sub(last) > worst {
					worst = now.Sub(last)
				}
				last = time.Now()
				if got+k > len(data) || !bytes.Equal(buf[:k], data[got:got+k]) {
					fail(i, fmt.Errorf("echo differs at byte %d", got))
					return
				}
				got += k
			}
			for {
				cur := stallNs.Load()
				if int64(worst) <= cur || stallNs.CompareAndSwap(cur, int64(worst)) {
					break
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := result{bytes: int64(n) * size,
		extra: fmt.Sprintf("sessions=%d failures=%d elapsed_ms=%d max_stall_ms=%d",
			n, failures.Load(), elapsed.Milliseconds(), time.Duration(stallNs.Load()).Milliseconds())}
	if failures.Load() > 0 {
		r.reason = firstErr
		return r
	}
	r.ok = true
	return r
}
