// Package tun is the shared part of our own kcptun-compatible Go tunnel
// peer (interop/tunnel/client and interop/tunnel/server), used by
// tests/kcptun_interop.rs to check kcptun-rs against current kcp-go and
// smux releases. It accepts kcptun's flag names for the subset the tests
// use. QPP is not supported: github.com/xtaci/qpp is not served by the Go
// module proxy.
package tun

import (
	"crypto/sha1"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/golang/snappy"
	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/smux"
	"golang.org/x/crypto/pbkdf2"
)

// Options are the kcptun flags this peer understands.
type Options struct {
	Listen      string
	Remote      string
	Key         string
	Crypt       string
	Mode        string
	DataShard   int
	ParityShard int
	NoComp      bool
	SmuxVer     int
	MTU         int
	SndWnd      int
	RcvWnd      int
	Conn        int
	NoDelay     int
	Interval    int
	Resend      int
	NC          int
	Quiet       bool
	SmuxBuf     int
	StreamBuf   int
	SockBuf     int
	KeepAlive   int
}

// Parse reads kcptun-style flags; remoteFlag is "r" (client) or "t" (server).
func Parse(remoteFlag string, defaultListen string, defaultRemote string) *Options {
	o := &Options{}
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.StringVar(&o.Listen, "l", defaultListen, "listen address")
	fs.StringVar(&o.Listen, "listen", defaultListen, "listen address")
	fs.StringVar(&o.Remote, remoteFlag, defaultRemote, "remote/target address")
	if remoteFlag == "r" {
		fs.StringVar(&o.Remote, "remoteaddr", defaultRemote, "remote address")
	} else {
		fs.StringVar(&o.Remote, "target", defaultRemote, "target address")
	}
	fs.StringVar(&o.Key, "key", "it's a secrect", "pre-shared secret")
	fs.StringVar(&o.Crypt, "crypt", "aes", "cipher")
	fs.StringVar(&o.Mode, "mode", "fast", "normal, fast, fast2, fast3, manual")
	fs.IntVar(&o.DataShard, "datashard", 10, "FEC data shards")
	fs.IntVar(&o.ParityShard, "parityshard", 3, "FEC parity shards")
	fs.BoolVar(&o.NoComp, "nocomp", false, "disable compression")
	fs.IntVar(&o.SmuxVer, "smuxver", 2, "smux version 1 or 2")
	fs.IntVar(&o.MTU, "mtu", 1350, "MTU")
	fs.IntVar(&o.SndWnd, "sndwnd", 128, "send window")
	fs.IntVar(&o.RcvWnd, "rcvwnd", 512, "receive window")
	fs.IntVar(&o.Conn, "conn", 1, "sessions per client")
	fs.IntVar(&o.NoDelay, "nodelay", 0, "manual mode nodelay")
	fs.IntVar(&o.Interval, "interval", 50, "manual mode interval")
	fs.IntVar(&o.Resend, "resend", 0, "manual mode resend")
	fs.IntVar(&o.NC, "nc", 0, "manual mode no congestion")
	fs.BoolVar(&o.Quiet, "quiet", false, "no per-stream logs")
	fs.IntVar(&o.SmuxBuf, "smuxbuf", 4194304, "smux receive buffer")
	fs.IntVar(&o.StreamBuf, "streambuf", 2097152, "smux stream buffer")
	fs.IntVar(&o.SockBuf, "sockbuf", 4194304, "socket buffer")
	fs.IntVar(&o.KeepAlive, "keepalive", 10, "smux keepalive seconds")
	qpp := fs.Bool("QPP", false, "not supported by this peer")
	fs.Int("QPPCount", 61, "not supported by this peer")
	if err := fs.Parse(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
	if *qpp {
		log.Fatal("--QPP is not supported by this peer (xtaci/qpp is not on the module proxy)")
	}
	switch o.Mode {
	case "normal":
		o.NoDelay, o.Interval, o.Resend, o.NC = 0, 40, 2, 1
	case "fast":
		o.NoDelay, o.Interval, o.Resend, o.NC = 0, 30, 2, 1
	case "fast2":
		o.NoDelay, o.Interval, o.Resend, o.NC = 1, 20, 2, 1
	case "fast3":
		o.NoDelay, o.Interval, o.Resend, o.NC = 1, 10, 2, 1
	case "manual":
	default:
		log.Fatalf("unknown --mode %q", o.Mode)
	}
	if o.Conn < 1 {
		log.Fatal("--conn must be at least 1")
	}
	return o
}

// BlockCrypt derives kcptun's key (PBKDF2-SHA1, salt "kcp-go", 4096
// rounds, 32 bytes) and picks the cipher by kcptun's names.
func (o *Options) BlockCrypt() kcp.BlockCrypt {
	pass := pbkdf2.Key([]byte(o.Key), []byte("kcp-go"), 4096, 32, sha1.New)
	var b kcp.BlockCrypt
	var err error
	switch o.Crypt {
	case "null":
		return nil
	case "sm4":
		b, err = kcp.NewSM4BlockCrypt(pass[:16])
	case "tea":
		b, err = kcp.NewTEABlockCrypt(pass[:16])
	case "xor":
		b, err = kcp.NewSimpleXORBlockCrypt(pass)
	case "none":
		b, err = kcp.NewNoneBlockCrypt(pass)
	case "aes-128":
		b, err = kcp.NewAESBlockCrypt(pass[:16])
	case "aes-192":
		b, err = kcp.NewAESBlockCrypt(pass[:24])
	case "blowfish":
		b, err = kcp.NewBlowfishBlockCrypt(pass)
	case "twofish":
		b, err = kcp.NewTwofishBlockCrypt(pass)
	case "cast5":
		b, err = kcp.NewCast5BlockCrypt(pass[:16])
	case "3des":
		b, err = kcp.NewTripleDESBlockCrypt(pass[:24])
	case "xtea":
		b, err = kcp.NewXTEABlockCrypt(pass[:16])
	case "salsa20":
		b, err = kcp.NewSalsa20BlockCrypt(pass)
	case "aes-128-gcm":
		b, err = kcp.NewAESGCMCrypt(pass[:16])
	case "aes":
		b, err = kcp.NewAESBlockCrypt(pass)
	default:
		log.Fatalf("unknown --crypt %q", o.Crypt)
	}
	if err != nil {
		log.Fatalf("cipher %s: %v", o.Crypt, err)
	}
	return b
}

// Tune applies the session settings kcptun applies to every KCP session.
func (o *Options) Tune(s *kcp.UDPSession) {
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(o.NoDelay, o.Interval, o.Resend, o.NC)
	s.SetWindowSize(o.SndWnd, o.RcvWnd)
	s.SetMtu(o.MTU)
	s.SetACKNoDelay(false)
	if err := s.SetReadBuffer(o.SockBuf); err != nil {
		log.Println("SetReadBuffer:", err)
	}
	if err := s.SetWriteBuffer(o.SockBuf); err != nil {
		log.Println("SetWriteBuffer:", err)
	}
}

// SmuxConfig is kcptun's smux configuration for these options.
func (o *Options) SmuxConfig() *smux.Config {
	c := smux.DefaultConfig()
	c.Version = o.SmuxVer
	c.MaxReceiveBuffer = o.SmuxBuf
	c.MaxStreamBuffer = o.StreamBuf
	c.KeepAliveInterval = time.Duration(o.KeepAlive) * time.Second
	if err := smux.VerifyConfig(c); err != nil {
		log.Fatalf("smux config: %v", err)
	}
	return c
}

// compConn is kcptun's compression layer: the snappy framing format
// over the whole session, flushed after every write.
type compConn struct {
	net.Conn
	w *snappy.Writer
	r *snappy.Reader
}

func (c *compConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *compConn) Write(p []byte) (int, error) {
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Wrap adds compression unless --nocomp.
func (o *Options) Wrap(c net.Conn) io.ReadWriteCloser {
	if o.NoComp {
		return c
	}
	return &compConn{Conn: c, w: snappy.NewBufferedWriter(c), r: snappy.NewReader(c)}
}

// Logf logs unless --quiet.
func (o *Options) Logf(format string, v ...any) {
	if !o.Quiet {
		log.Printf(format, v...)
	}
}

// Pipe copies both ways until either side ends, then closes both.
func Pipe(a, b io.ReadWriteCloser) {
	var once sync.Once
	closeBoth := func() { a.Close(); b.Close() }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(a, b); once.Do(closeBoth) }()
	go func() { defer wg.Done(); io.Copy(b, a); once.Do(closeBoth) }()
	wg.Wait()
}

// Fatal reports a setup error and exits.
func Fatal(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}
