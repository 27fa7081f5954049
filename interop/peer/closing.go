package peer

// Close-semantics roles (interop/close_test.go): a session that writes and
// closes at once must still deliver what it wrote. kcp-go v5.6.72 gets such
// data out; v5.7.6 drops datagrams still queued for sending on Close, so an
// accepted session that writes then closes loses them (wire.md §12).

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// Close-semantics roles: the writers close each session right after their
// last Write; the readers count the sessions whose payload arrived whole.
const (
	RoleWriteCloseServer = "write-close-server"
	RoleWriteCloseClient = "write-close-client"
	RoleReadServer       = "read-server"
	RoleReadClient       = "read-client"
)

// linger keeps a writer's process (and so its sessions' goroutines) alive
// after its last Close until stdin closes or the deadline passes: what is
// tested is Close, not process exit.
func (p *runner) linger() string {
	stop := make(chan string, 1)
	go func() {
		_, _ = io.Copy(io.Discard, p.stdin)
		stop <- "stdin-closed"
	}()
	select {
	case why := <-stop:
		return why
	case <-time.After(time.Until(p.deadline)):
		return "deadline"
	}
}

// sessionDeadline bounds one session of a reader role.
func (p *runner) sessionDeadline() time.Time {
	return minTime(p.deadline, time.Now().Add(p.cfg.SessionTimeout))
}

// writeCloseServer accepts sessions until --count of them have sent their
// hello byte; on each it then writes --bytes of the payload and closes at
// once. Sessions run concurrently, and one that sends no hello within
// --session-timeout is closed and not counted: a late ACK from a client
// session that already ended creates such a session in kcp-go's listener
// (and ours, §6.2), whose peer is gone.
func (p *runner) writeCloseServer() result {
	l, err := p.listen()
	if err != nil {
		return p.setupFailed("listen %s: %v", p.cfg.Addr, err)
	}
	// Not closed before the linger: closing kcp-go's listener closes the
	// socket its sessions still send on.
	defer l.Close()
	_ = l.SetReadDeadline(p.deadline)
	var mu sync.Mutex
	r := result{ok: true}
	served, ghosts := 0, 0
	done := make(chan struct{})
	go func() {
		for {
			s, err := l.AcceptKCP()
			if err != nil {
				return
			}
			go func() {
				if err := p.configure(s); err != nil {
					s.Close()
					return
				}
				_ = s.SetDeadline(p.sessionDeadline())
				var hello [1]byte
				if _, err := io.ReadFull(s, hello[:]); err != nil {
					s.Close()
					mu.Lock()
					ghosts++
					mu.Unlock()
					return
				}
				crc, err := p.writeAll(s)
				s.Close()
				mu.Lock()
				defer mu.Unlock()
				if err != nil && r.ok {
					r.ok, r.reason = false, fmt.Sprintf("session %d: %v", served, err)
				}
				r.bytes += p.cfg.Bytes
				r.crc = crc
				served++
				if served == p.cfg.Count {
					close(done)
				}
			}()
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Until(p.deadline)):
	}
	mu.Lock()
	if served < p.cfg.Count {
		r.ok, r.reason = false, fmt.Sprintf("only %d of %d sessions sent their hello by the deadline", served, p.cfg.Count)
	}
	mu.Unlock()
	why := p.linger()
	mu.Lock()
	defer mu.Unlock()
	r.extra = fmt.Sprintf("sessions=%d ghosts=%d stop=%s", served, ghosts, why)
	return r
}

// writeCloseClient dials --count sessions one after another; each writes
// --bytes of the payload and closes at once.
func (p *runner) writeCloseClient() result {
	r := result{}
	for i := 0; i < p.cfg.Count; i++ {
		s, err := p.dial()
		if err != nil {
			return p.setupFailed("dial %s: %v", p.cfg.Addr, err)
		}
		crc, err := p.writeAll(s)
		s.Close()
		if err != nil {
			r.reason = fmt.Sprintf("session %d: %v", i, err)
			return r
		}
		r.bytes += p.cfg.Bytes
		r.crc = crc
	}
	r.ok = true
	r.extra = fmt.Sprintf("sessions=%d stop=%s", p.cfg.Count, p.linger())
	return r
}

// readTally counts a reader's sessions.
type readTally struct {
	mu       sync.Mutex
	complete int // sessions whose whole payload arrived and matched
	failed   int
	bytes    int64
	crc      uint32
	first    string // the first failure
}

func (t *readTally) add(i int, v *verifier, want int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err == nil && v.mismatch < 0 && v.got == want:
		t.complete++
		t.bytes += v.got
		t.crc = v.crc
	default:
		t.failed++
		if t.first == "" {
			t.first = fmt.Sprintf("session %d: %s", i, verdict(v, want, err).reason)
		}
	}
}

func (t *readTally) result(count int) result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := result{bytes: t.bytes, crc: t.crc, ok: t.complete == count,
		extra: fmt.Sprintf("sessions=%d of=%d", t.complete, count)}
	if !r.ok {
		r.reason = fmt.Sprintf("%d of %d sessions delivered their payload", t.complete, count)
		if t.first != "" {
			r.reason += "; first failure: " + t.first
		}
	}
	return r
}

// readClient dials --count sessions one after another; each sends the hello
// byte and must then receive --bytes of the payload within
// --session-timeout. It goes on after a failed session, so the count says
// how many delivered.
func (p *runner) readClient() result {
	var t readTally
	for i := 0; i < p.cfg.Count; i++ {
		s, err := p.dial()
		if err != nil {
			return p.setupFailed("dial %s: %v", p.cfg.Addr, err)
		}
		_ = s.SetDeadline(p.sessionDeadline())
		var v *verifier
		if _, err = s.Write([]byte{byeByte}); err == nil {
			v, err = p.readVerify(s)
		} else {
			v = newVerifier(p.cfg.Seed)
		}
		s.Close()
		t.add(i, v, p.cfg.Bytes, err)
		if time.Now().After(p.deadline) {
			break
		}
	}
	return t.result(p.cfg.Count)
}

// readServer accepts sessions until --count of them have ended; each must
// deliver --bytes of the payload within --session-timeout.
func (p *runner) readServer() result {
	l, err := p.listen()
	if err != nil {
		return p.setupFailed("listen %s: %v", p.cfg.Addr, err)
	}
	defer l.Close()
	_ = l.SetReadDeadline(p.deadline)
	var t readTally
	var wg sync.WaitGroup
	var acceptErr error
	for i := 0; i < p.cfg.Count; i++ {
		s, err := l.AcceptKCP()
		if err != nil {
			acceptErr = err
			break
		}
		wg.Add(1)
		go func(i int, s *kcp.UDPSession) {
			defer wg.Done()
			defer s.Close()
			if err := p.configure(s); err != nil {
				t.add(i, newVerifier(p.cfg.Seed), p.cfg.Bytes, err)
				return
			}
			_ = s.SetDeadline(p.sessionDeadline())
			v, err := p.readVerify(s)
			t.add(i, v, p.cfg.Bytes, err)
		}(i, s)
	}
	wg.Wait()
	r := t.result(p.cfg.Count)
	if acceptErr != nil && !r.ok {
		r.reason = strings.TrimSpace(r.reason + "; accept: " + acceptErr.Error())
	}
	return r
}
