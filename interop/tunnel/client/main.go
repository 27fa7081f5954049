// Command client is our kcptun-compatible Go tunnel client: TCP on -l,
// each connection a smux stream over one of --conn KCP sessions to -r.
package main

import (
	"net"
	"sync/atomic"

	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/smux"

	"kcpsession/tunnel/tun"
)

func main() {
	o := tun.Parse("r", ":12948", "127.0.0.1:29900")
	block := o.BlockCrypt()
	dial := func() *smux.Session {
		s, err := kcp.DialWithOptions(o.Remote, block, o.DataShard, o.ParityShard)
		if err != nil {
			tun.Fatal("dial", err)
		}
		o.Tune(s)
		m, err := smux.Client(o.Wrap(s), o.SmuxConfig())
		if err != nil {
			tun.Fatal("smux", err)
		}
		return m
	}
	muxes := make([]atomic.Pointer[smux.Session], o.Conn)
	for i := range muxes {
		muxes[i].Store(dial())
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		tun.Fatal("listen", err)
	}
	var rr uint64
	for {
		c, err := ln.Accept()
		if err != nil {
			tun.Fatal("accept", err)
		}
		slot := &muxes[rr%uint64(len(muxes))]
		rr++
		m := slot.Load()
		if m.IsClosed() {
			m = dial()
			slot.Store(m)
		}
		go func() {
			st, err := m.OpenStream()
			if err != nil {
				o.Logf("open stream: %v", err)
				c.Close()
				return
			}
			tun.Pipe(c, st)
		}()
	}
}
