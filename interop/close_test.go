package interop

// Close semantics against real kcp-go: a Rust session that writes and then
// closes at once must still deliver what it wrote, to a kcp-go v5.6 and a
// v5.7 peer alike. kcp-go v5.6.72 gets such data out; v5.7.6 drops the
// datagrams still queued for sending on Close (wire.md §12), which the
// Go ↔ Go control shows without failing the test.

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kcpsession/interop/peer"
)

// closeCase is one writer → reader pairing.
type closeCase struct {
	name       string
	writerImpl impl
	writerRole string // write-close-server or write-close-client
	readerImpl impl
	count      int
	bytes      int64
	sessionTO  time.Duration
	mustPass   bool // false: the Go ↔ Go control, only reported
}

// closeArgs: aes with FEC 10/3 in stream mode, kcptun's fast preset; both
// sides' windows 1024. mtu 1400.
func closeArgs(role, addr string, cc closeCase) []string {
	return []string{"--role", role, "--addr", addr, "--crypt", "aes", "--key", "close test",
		"--datashard", "10", "--parityshard", "3", "--mode", "fast", "--mtu", "1400",
		"--sndwnd", "1024", "--rcvwnd", "1024", "--stream",
		"--bytes", strconv.FormatInt(cc.bytes, 10), "--chunk", "8192", "--seed", "77",
		"--count", strconv.Itoa(cc.count),
		"--session-timeout", strconv.FormatFloat(cc.sessionTO.Seconds(), 'f', 1, 64),
		"--timeout", "90"}
}

// runClose runs one case; it returns how many sessions delivered their whole
// payload, and an error with every process's story if the case failed.
func runClose(t testing.TB, cc closeCase) (int, error) {
	serverImpl, serverRole, clientImpl, clientRole := cc.writerImpl, cc.writerRole, cc.readerImpl, peer.RoleReadClient
	if cc.writerRole == peer.RoleWriteCloseClient {
		serverImpl, serverRole, clientImpl, clientRole = cc.readerImpl, peer.RoleReadServer, cc.writerImpl, cc.writerRole
	}
	fail := func(reason string, procs ...*proc) (int, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "CLOSE CASE FAILED: %s (%d sessions of %d bytes)\n  reason: %s\n", cc.name, cc.count, cc.bytes, reason)
		for _, p := range procs {
			b.WriteString(p.describe())
		}
		return 0, fmt.Errorf("%s", b.String())
	}
	server, err := startPeer(t, serverImpl, closeArgs(serverRole, "127.0.0.1:0", cc))
	if err != nil {
		return fail(err.Error())
	}
	addr, err := server.waitListening(15 * time.Second)
	if err != nil {
		return fail(err.Error(), server)
	}
	client, err := startPeer(t, clientImpl, closeArgs(clientRole, addr, cc))
	if err != nil {
		return fail(err.Error(), server)
	}
	reader, writer := client, server
	if clientRole == peer.RoleWriteCloseClient {
		reader, writer = server, client
	}
	if err := reader.wait(100 * time.Second); err != nil {
		return fail(err.Error(), reader, writer)
	}
	// The writer lingers until told to stop, so its closed sessions were
	// never cut short by its process ending.
	if err := writer.stop(15 * time.Second); err != nil {
		return fail(err.Error(), reader, writer)
	}
	rr, err := reader.report()
	if err != nil {
		return fail(err.Error(), reader, writer)
	}
	wr, err := writer.report()
	if err != nil {
		return fail(err.Error(), reader, writer)
	}
	delivered, _ := strconv.Atoi(rr.fields["sessions"])
	want := payloadCRC([2]int64{77, cc.bytes})
	switch {
	case writer.exitCode() != 0 || !wr.ok:
		return delivered, firstErr(fail(fmt.Sprintf("%s failed (exit %d): %s", writer.label, writer.exitCode(), wr.reason), reader, writer))
	case reader.exitCode() != 0 || !rr.ok:
		return delivered, firstErr(fail(fmt.Sprintf("%s: %s", reader.label, rr.reason), reader, writer))
	case delivered != cc.count || rr.bytes != int64(cc.count)*cc.bytes:
		return delivered, firstErr(fail(fmt.Sprintf("%s reported sessions=%s bytes=%d, want %d and %d", reader.label, rr.fields["sessions"], rr.bytes, cc.count, int64(cc.count)*cc.bytes), reader, writer))
	case rr.crc != want:
		return delivered, firstErr(fail(fmt.Sprintf("%s reported crc32 %08x, the payload's is %08x", reader.label, rr.crc, want), reader, writer))
	}
	return delivered, nil
}

func firstErr(_ int, err error) error { return err }

// TestCloseKeepsWrittenData: both directions, 50 sessions each, every one
// written and closed at once by the Rust side (close() and drop alternating)
// and read by kcp-go. An accepted session knows the client's receive window
// (1024), so 64 KiB all fit in the final flush; a dialed session has not
// heard from the server yet and, like kcp-go's, assumes the initial remote
// window of 32 segments, so it writes 32 KiB (25 segments at mss 1348).
func TestCloseKeepsWrittenData(t *testing.T) {
	gp := goPeer(t)
	rp := rustPeer(t, "interop close")
	cases := []closeCase{
		{name: "rust accepted session -> go client", writerImpl: rp, writerRole: peer.RoleWriteCloseServer,
			readerImpl: gp, count: 50, bytes: 64 << 10, sessionTO: 5 * time.Second, mustPass: true},
		{name: "rust dialed session -> go server", writerImpl: rp, writerRole: peer.RoleWriteCloseClient,
			readerImpl: gp, count: 50, bytes: 32 << 10, sessionTO: 5 * time.Second, mustPass: true},
		{name: "go accepted session -> go client (control, not checked)", writerImpl: gp, writerRole: peer.RoleWriteCloseServer,
			readerImpl: gp, count: 5, bytes: 64 << 10, sessionTO: 1 * time.Second},
	}
	var mu sync.Mutex
	got := make([]string, len(cases))
	t.Run("cases", func(t *testing.T) {
		for i, cc := range cases {
			t.Run(strings.NewReplacer(" ", "_", ">", "", ",", "").Replace(cc.name), func(t *testing.T) {
				t.Parallel()
				n, err := runClose(t, cc)
				mu.Lock()
				got[i] = fmt.Sprintf("%s %d/%d", cc.name, n, cc.count)
				mu.Unlock()
				if err != nil && cc.mustPass {
					t.Error(err)
				}
			})
		}
	})
	fmt.Printf("interop close (kcp-go %s, rust slot: %s): written then closed at once: %s\n",
		kcpGoVersion(), rp.desc, strings.Join(got, ", "))
}
