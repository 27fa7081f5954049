package interop

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestMessageLongerThanKcpGoWindow (issue 12 item 6): a kcp-go receiver
// delivers a message only when all its fragments fit in its receive queue,
// which holds at most rcv_wnd segments, so a longer message used to stop the
// session for good with no error anywhere. Against a real kcp-go echo server
// in message mode, the Rust client's send_msg must refuse a message of one
// fragment more than kcp-go's receive window (MessageTooLarge, max = that
// window) and the session must go on echoing a message of exactly the
// window's size, byte for byte.
func TestMessageLongerThanKcpGoWindow(t *testing.T) {
	gp := goPeer(t)
	rp := rustPeer(t, "interop message window")
	const mtu = 1350
	// aes: 16-byte nonce + 4-byte CRC in front of KCP, 24-byte KCP header.
	const mss = mtu - 20 - 24
	for _, wnd := range []int{32, 64} {
		t.Run(fmt.Sprintf("rcvwnd%d", wnd), func(t *testing.T) {
			common := []string{"--crypt", "aes", "--key", "msgwnd", "--message", "--mode", "fast3",
				"--mtu", strconv.Itoa(mtu), "--sndwnd", strconv.Itoa(wnd), "--rcvwnd", strconv.Itoa(wnd),
				"--timeout", "15"}
			srv, err := startPeer(t, gp, append([]string{"--role", "echo-server", "--addr", "127.0.0.1:0"}, common...))
			if err != nil {
				t.Fatal(err)
			}
			addr, err := srv.waitListening(10 * time.Second)
			if err != nil {
				t.Fatalf("%v\n%s", err, srv.describe())
			}
			cli, err := startPeer(t, rp, append([]string{"--role", "msg-client", "--addr", addr,
				"--bytes", strconv.Itoa(mss * (wnd + 1)), "--chunk", strconv.Itoa(mss * wnd), "--seed", "7"}, common...))
			if err != nil {
				t.Fatal(err)
			}
			if err := cli.wait(30 * time.Second); err != nil {
				t.Fatalf("%v\n%s", err, cli.describe())
			}
			r, err := cli.report()
			if err != nil {
				t.Fatalf("%v\n%s", err, cli.describe())
			}
			if !r.ok || cli.exitCode() != 0 {
				t.Fatalf("msg-client failed: %s\n%s\n%s", r.reason, cli.describe(), srv.describe())
			}
			want := map[string]string{"refused": "true", "fragments": strconv.Itoa(wnd + 1), "max": strconv.Itoa(wnd)}
			for k, v := range want {
				if r.fields[k] != v {
					t.Fatalf("msg-client %s=%q, want %q\n%s", k, r.fields[k], v, cli.describe())
				}
			}
			// The echoed bytes are checked against our own computation of the
			// payload, not the Rust peer's.
			if wantCRC := payloadCRC([2]int64{7, 100}, [2]int64{9, int64(mss * wnd)}); r.crc != wantCRC {
				t.Fatalf("msg-client crc32=%08x, want %08x\n%s", r.crc, wantCRC, cli.describe())
			}
			if err := srv.stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}
