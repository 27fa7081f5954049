// Command server is our kcptun-compatible Go tunnel server: KCP sessions
// on -l, each smux stream forwarded to the TCP target -t.
package main

import (
	"net"

	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/smux"

	"kcpsession/tunnel/tun"
)

func main() {
	o := tun.Parse("t", ":29900", "127.0.0.1:12948")
	ln, err := kcp.ListenWithOptions(o.Listen, o.BlockCrypt(), o.DataShard, o.ParityShard)
	if err != nil {
		tun.Fatal("listen", err)
	}
	if err := ln.SetReadBuffer(o.SockBuf); err != nil {
		o.Logf("SetReadBuffer: %v", err)
	}
	if err := ln.SetWriteBuffer(o.SockBuf); err != nil {
		o.Logf("SetWriteBuffer: %v", err)
	}
	for {
		s, err := ln.AcceptKCP()
		if err != nil {
			tun.Fatal("accept", err)
		}
		o.Tune(s)
		go serve(o, s)
	}
}

func serve(o *tun.Options, s *kcp.UDPSession) {
	m, err := smux.Server(o.Wrap(s), o.SmuxConfig())
	if err != nil {
		o.Logf("smux: %v", err)
		s.Close()
		return
	}
	defer m.Close()
	for {
		st, err := m.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			c, err := net.Dial("tcp", o.Remote)
			if err != nil {
				o.Logf("dial target: %v", err)
				st.Close()
				return
			}
			tun.Pipe(st, c)
		}()
	}
}
