// Command bench runs kcp-session (Rust) and kcp-go side by side on this
// machine and writes docs/benchmarks.md: throughput, CPU per GiB, peak RSS,
// request/response latency, idle-session cost and cipher/FEC micro benches,
// as medians of alternating runs and Rust/Go ratios.
//
//	cd interop && go run ./bench            # full run (~10 min)
//	cd interop && go run ./bench --quick    # fewer, shorter runs (~4 min)
//
// Both sides run the interop peers with the same flags: the Rust peer
// (examples/kcp_peer.rs) against itself and the Go peer (cmd/gopeer, kcp-go's
// public API) against itself. It is not part of any test suite.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"kcpsession/interop/relay"
)

var (
	quick       = flag.Bool("quick", false, "fewer and shorter runs")
	outPath     = flag.String("out", "", "markdown output (default <repo>/docs/benchmarks.md)")
	only        = flag.String("only", "", "comma list of sections to run: tput,cpu,latency,idle,many,micro,tunnel (default all)")
	goModfile   = flag.String("gomod", "go.mod", "modfile the Go peer is built with (go.v576.mod: kcp-go v5.7.6)")
	sockbuf     = flag.Int("sockbuf", 4<<20, "socket buffer size for both peers")
	verbose     = flag.Bool("v", false, "print every run")
	rustThreads = flag.Int("rust-threads", 1, "Rust peer --threads (1 = tokio current-thread runtime)")
	repoRoot    string
)

// notesMarker starts the hand-written part of docs/benchmarks.md, kept as is
// when the file is regenerated.
const notesMarker = "<!-- notes: kept by interop/bench -->"

// impl is one side of the comparison.
type impl struct {
	name  string
	bin   string
	extra []string // flags only this implementation's peer takes
	env   []string
}

func main() {
	flag.Parse()
	wd, _ := os.Getwd()
	repoRoot = filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(repoRoot, "Cargo.toml")); err != nil {
		fatal("run from interop/: cd interop && go run ./bench")
	}
	if *outPath == "" {
		*outPath = filepath.Join(repoRoot, "docs", "benchmarks.md")
	}
	start := time.Now()
	rust, goBin := build()
	impls := []impl{
		{name: "rust", bin: rust, extra: []string{"--threads", strconv.Itoa(*rustThreads)}},
		{name: "go", bin: goBin},
	}
	want := func(s string) bool { return *only == "" || strings.Contains(","+*only+",", ","+s+",") }

	if !(want("tput") || want("cpu") || want("latency") || want("idle") || want("many") || want("micro")) {
		// Only the tunnel section: leave the driver's tables as they are.
		if want("tunnel") {
			tunnel()
		}
		return
	}
	var md strings.Builder
	header(&md)
	if want("tput") {
		throughput(&md, impls)
	}
	if want("cpu") {
		cpuPerGiB(&md, impls)
	}
	if want("latency") {
		latency(&md, impls)
	}
	if want("idle") {
		idle(&md, impls)
	}
	if want("many") {
		many(&md, impls)
	}
	if want("micro") {
		micro(&md)
	}
	fmt.Fprintf(&md, "\nTotal driver time: %s.\n", time.Since(start).Round(time.Second))
	// Hand-written analysis below notesMarker survives regeneration.
	if old, err := os.ReadFile(*outPath); err == nil {
		if i := bytes.Index(old, []byte(notesMarker)); i >= 0 {
			md.WriteString("\n")
			md.Write(old[i:])
		}
	}
	if err := os.WriteFile(*outPath, []byte(md.String()), 0o644); err != nil {
		fatal(err.Error())
	}
	fmt.Println("wrote", *outPath, "in", time.Since(start).Round(time.Second))
	if want("tunnel") {
		tunnel()
	}
}

// tunnel runs benches/tunnel_compare.sh, our kcptun-rs pair against kcptun's
// pair, which rewrites only its own "kcptun tunnel" section (kept below
// notesMarker) of docs/benchmarks.md. It needs Debian's kcptun on PATH
// (scripts/kcptun-peers installs it); without it the section is left as is.
func tunnel() {
	if _, err := exec.LookPath("kcptun-server"); err != nil {
		fmt.Println("tunnel: kcptun-server not on PATH (bash scripts/kcptun-peers installs it); section left unchanged")
		return
	}
	c := exec.Command("bash", "benches/tunnel_compare.sh")
	c.Dir = repoRoot
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		fatal("benches/tunnel_compare.sh: " + err.Error())
	}
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
}

func build() (rust, gopeer string) {
	logf("building the Rust peer (cargo build --release --example kcp_peer) and the Go peer")
	c := exec.Command("cargo", "build", "--release", "--example", "kcp_peer", "--message-format=json")
	c.Dir = repoRoot
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		fatal("cargo build: " + err.Error())
	}
	re := regexp.MustCompile(`"executable":"([^"]*kcp_peer)"`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		rust = m[1]
	}
	if rust == "" {
		fatal("cargo did not report the kcp_peer executable")
	}
	// Neutral names in a private directory: other jobs on a shared machine
	// clean up stray interop peers by name (pkill kcp_peer / gopeer).
	dir, err := os.MkdirTemp("", "pb")
	if err != nil {
		fatal(err.Error())
	}
	b, err := os.ReadFile(rust)
	if err != nil {
		fatal(err.Error())
	}
	rust = filepath.Join(dir, "rpeer")
	if err := os.WriteFile(rust, b, 0o755); err != nil {
		fatal(err.Error())
	}
	gopeer = filepath.Join(dir, "gpeer")
	g := exec.Command("go", "build", "-modfile="+*goModfile, "-o", gopeer, "./cmd/gopeer")
	g.Stderr = os.Stderr
	if err := g.Run(); err != nil {
		fatal("go build: " + err.Error())
	}
	return rust, gopeer
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func header(md *strings.Builder) {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kcpgo := cmdOut("go", "list", "-modfile="+*goModfile, "-m", "-f", "{{.Version}}", "github.com/xtaci/kcp-go/v5")
	fmt.Fprintf(md, "# kcp-session vs kcp-go: side-by-side benchmarks\n\n")
	fmt.Fprintf(md, "Generated by `cd interop && go run ./bench%s` (interop/bench/main.go) on %s.\n\n",
		map[bool]string{true: " --quick", false: ""}[*quick], time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(md, "| | |\n|---|---|\n")
	fmt.Fprintf(md, "| CPU | %s, %d logical cores (shared with other jobs while measured) |\n", cpu, runtime.NumCPU())
	fmt.Fprintf(md, "| kernel | %s |\n", cmdOut("uname", "-sr"))
	fmt.Fprintf(md, "| rustc | %s |\n", cmdOut("rustc", "--version"))
	fmt.Fprintf(md, "| go | %s |\n", runtime.Version())
	fmt.Fprintf(md, "| kcp-go | github.com/xtaci/kcp-go/v5 %s |\n", kcpgo)
	fmt.Fprintf(md, "| socket buffers | %d bytes, both peers (`--sockbuf`) |\n", *sockbuf)
	fmt.Fprintf(md, "| runtimes | Rust peer `--threads %d` (1 = tokio current-thread runtime); Go peer default GOMAXPROCS (%d) |\n\n",
		*rustThreads, runtime.GOMAXPROCS(0))
	md.WriteString("Every figure is the median of alternating runs (Rust, Go, Rust, Go, ...) of the interop peers " +
		"(examples/kcp_peer.rs against itself, interop/cmd/gopeer against itself) with identical flags. " +
		"Ratios are Rust/Go: above 1 is better for throughput, below 1 is better for CPU, memory and latency. " +
		"Compare ratios only; absolute numbers move with the machine's load.\n")
}

// ---------------------------------------------------------------- processes

type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	result string
	ready  chan string // LISTENING / READY lines
	done   chan struct{}
	start  time.Time
	wall   time.Duration
	rusage *syscall.Rusage
	err    error
	hwm    atomic.Int64 // VmHWM in bytes, sampled while it runs
}

func spawn(im impl, args ...string) (*proc, error) {
	bin := im.bin
	p := &proc{cmd: exec.Command(bin, append(args, im.extra...)...), ready: make(chan string, 4), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), im.env...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	p.cmd.Stderr = &stderr
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	// ru_maxrss of a child started by Go's vfork+exec also counts the
	// parent's (this driver's) RSS at exec time, so peak RSS comes from
	// sampling /proc/PID/status VmHWM instead (peak of the child's own image).
	go func() {
		pid := p.cmd.Process.Pid
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := procField(pid, "VmHWM:"); v > 0 {
				p.hwm.Store(v)
			}
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "LISTENING "), strings.HasPrefix(l, "READY "):
				p.ready <- l
			case strings.HasPrefix(l, "RESULT "):
				p.result = l
			}
		}
		p.err = p.cmd.Wait()
		p.wall = time.Since(p.start)
		if p.cmd.ProcessState != nil {
			p.rusage, _ = p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
		}
		if p.err != nil && *verbose {
			logf("  %s: %v %s", filepath.Base(bin), p.err, strings.TrimSpace(stderr.String()))
		}
		close(p.done)
	}()
	return p, nil
}

func (p *proc) waitReady(prefix string, d time.Duration) (string, error) {
	select {
	case l := <-p.ready:
		return strings.TrimPrefix(l, prefix), nil
	case <-p.done:
		return "", fmt.Errorf("exited before %s: %v", prefix, p.err)
	case <-time.After(d):
		return "", fmt.Errorf("no %s line after %v", prefix, d)
	}
}

// stop closes stdin and waits; kills after d.
func (p *proc) stop(d time.Duration) {
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) ok() bool { return p.err == nil && strings.Contains(p.result, " ok=true") }

func (p *proc) cpu() time.Duration {
	if p.rusage == nil {
		return 0
	}
	return time.Duration(p.rusage.Utime.Nano() + p.rusage.Stime.Nano())
}

// maxRSS in bytes: the last VmHWM sample (see spawn).
func (p *proc) maxRSS() int64 { return p.hwm.Load() }

// procField reads a "Name:   N kB" line of /proc/PID/status, in bytes.
func procField(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func common(extra ...string) []string {
	a := []string{"--mode", "fast3", "--mtu", "1400", "--sndwnd", "1024", "--rcvwnd", "1024",
		"--sockbuf", strconv.Itoa(*sockbuf), "--stream"}
	return append(a, extra...)
}

// pair runs one server and one client of the same implementation. The client
// talks to via (if given) instead of the server's own address.
type pairResult struct {
	server, client *proc
}

// serverGrace: how long the server may take to exit once the client is done
// (a sink lingers up to 3 s for a bye that may have been lost; throughput runs
// do not need its rusage, so they pass a short grace and it is killed).
func runPair(im impl, serverRole, clientRole string, flags []string, clientFlags []string, timeout float64, via func(string) (string, func()), serverGrace time.Duration) (*pairResult, error) {
	to := []string{"--timeout", strconv.FormatFloat(timeout, 'f', 1, 64)}
	srv, err := spawn(im, append(append([]string{"--role", serverRole, "--addr", "127.0.0.1:0"}, flags...), to...)...)
	if err != nil {
		return nil, err
	}
	addr, err := srv.waitReady("LISTENING ", 10*time.Second)
	if err != nil {
		srv.stop(time.Second)
		return nil, err
	}
	if via != nil {
		var closeVia func()
		addr, closeVia = via(addr)
		defer closeVia()
	}
	cl, err := spawn(im, append(append(append([]string{"--role", clientRole, "--addr", addr}, flags...), clientFlags...), to...)...)
	if err != nil {
		srv.stop(time.Second)
		return nil, err
	}
	cl.stdin.Close()
	<-cl.done
	srv.stop(serverGrace)
	if !cl.ok() {
		return &pairResult{srv, cl}, fmt.Errorf("%s %s failed: %s", im.name, clientRole, cl.result)
	}
	return &pairResult{srv, cl}, nil
}

// ---------------------------------------------------------------- statistics

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratio(r, g float64) string {
	if g == 0 || r == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r/g)
}

// ---------------------------------------------------------------- throughput

type cryptCfg struct {
	label string
	flags []string
}

var cryptCfgs = []cryptCfg{
	{"Salsa20 + FEC 10/3 (kcp-go's benchmark settings)", []string{"--crypt", "salsa20", "--datashard", "10", "--parityshard", "3"}},
	{"AES-128 + FEC 10/3", []string{"--crypt", "aes-128", "--datashard", "10", "--parityshard", "3"}},
	{"no crypto, no FEC", []string{"--crypt", "null"}},
}

var msgSizes = []int{4 << 10, 64 << 10, 512 << 10, 1 << 20}

// stallLimit: kcp-go's sink sometimes waits exactly 7 s for a window probe
// (see the notes below the table); such runs are discarded and repeated.
const stallLimit = 6 * time.Second

func throughput(md *strings.Builder, impls []impl) {
	runs, total := 5, 64<<20
	if *quick {
		runs, total = 3, 16<<20
	}
	fmt.Fprintf(md, "\n## Throughput over loopback\n\n")
	fmt.Fprintf(md, "%d MiB per run, written in message-sized writes (`--chunk`); echo: the client writes and "+
		"concurrently reads the echo, MB/s counts one direction (as kcp-go's BenchmarkEchoSpeed); sink: source → sink "+
		"plus a 4-byte CRC ack. Both ends use the same flags: fast3, mtu 1400, windows 1024/1024, stream mode. "+
		"Time is measured by the client from its first write to the last echoed byte (echo) or to the sink's ack "+
		"(sink), reported as `elapsed_us` in its RESULT line. Median of %d runs per cell.\n\n", total>>20, runs)
	ceiling := wireCeiling(md, runs)
	gso := ceiling["gso"]
	share := func(v float64) string {
		if gso == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f%%", 100*v/gso)
	}
	md.WriteString("| settings | test | msg | Rust MB/s | Go MB/s | Rust/Go | Rust / Go share of GSO ceiling |\n|---|---|---|---|---|---|---|\n")
	stalls := 0
	for _, cc := range cryptCfgs {
		for _, test := range []string{"echo", "sink"} {
			for _, sz := range msgSizes {
				vals := map[string][]float64{}
				for r := 0; r < runs; r++ {
					for _, im := range impls {
						for try := 0; try < 3; try++ {
							mbs, stalled, err := oneTput(im, test, cc.flags, sz, total)
							if err != nil {
								logf("  %s %s %s %d: %v", im.name, cc.label, test, sz, err)
								break
							}
							if stalled {
								stalls++
								logf("  %s sink stalled (window probe), repeating", im.name)
								continue
							}
							vals[im.name] = append(vals[im.name], mbs)
							break
						}
					}
				}
				r, g := median(vals["rust"]), median(vals["go"])
				logf("%-50s %-4s %7s rust %7.1f go %7.1f MB/s ratio %s", cc.label, test, size(sz), r, g, ratio(r, g))
				fmt.Fprintf(md, "| %s | %s | %s | %.1f | %.1f | **%s** | %s / %s |\n", cc.label, test, size(sz), r, g, ratio(r, g), share(r), share(g))
			}
		}
	}
	fmt.Fprintf(md, "\nRuns discarded because the sink stalled for kcp-go's 7 s window probe and repeated: %d. "+
		"(kcp-go's listener creates the session with receive window 32; the peer raises it to 1024 after AcceptKCP, "+
		"after data may already have filled the 32 slots and advertised window 0, and no window update follows; "+
		"kcp-session's listener applies the configured window from the first packet.)\n", stalls)
}

// wireCeiling builds interop/blaster (C: sendmmsg, UDP GSO, GSO+GRO) and
// measures, alternating the modes, how many MB/s of 1400-byte datagrams
// loopback carries to one receiving socket on this machine now: the most
// any library on these sockets could reach. Returns the median per mode.
func wireCeiling(md *strings.Builder, runs int) map[string]float64 {
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("kcp-bench-blaster-%d", os.Getpid()))
	defer os.Remove(bin)
	if out, err := exec.Command("cc", "-O2", "-pthread", "-o", bin, "blaster/blaster.c").CombinedOutput(); err != nil {
		logf("blaster: cc failed (%v): %s; no ceiling column", err, out)
		return nil
	}
	modes := []struct{ name, label string }{
		{"mmsg", "sendmmsg / recvmmsg, 64 per call"},
		{"gso", "sendmmsg of 64 KiB GSO runs (UDP_SEGMENT) / recvmmsg"},
		{"gsogro", "GSO / GRO receive (UDP_GRO, 64 KiB reads)"},
	}
	vals := map[string][]float64{}
	for r := 0; r < runs; r++ {
		for _, m := range modes {
			out, err := exec.Command(bin, m.name, "1", "1400", strconv.Itoa(*sockbuf)).Output()
			if err != nil {
				logf("  blaster %s: %v", m.name, err)
				continue
			}
			v, _ := strconv.ParseFloat(field(string(out), "recv_mb_s"), 64)
			vals[m.name] = append(vals[m.name], v)
		}
	}
	ceiling := map[string]float64{}
	fmt.Fprintf(md, "Wire ceiling: interop/blaster (C, no payload work) sends 1400-byte UDP datagrams over loopback for 1 s "+
		"from one thread to one receiving thread with the same socket buffers; MB/s received, median of %d runs "+
		"alternating the modes. A throughput row's share is its payload MB/s over the GSO ceiling (kcp-go sends with "+
		"sendmmsg and no GSO; the kcp-session listener, the sink side, reads with GRO).\n\n", runs)
	md.WriteString("| syscalls | MB/s received |\n|---|---|\n")
	for _, m := range modes {
		ceiling[m.name] = median(vals[m.name])
		logf("wire ceiling %-7s %.1f MB/s", m.name, ceiling[m.name])
		fmt.Fprintf(md, "| %s | %.1f |\n", m.label, ceiling[m.name])
	}
	md.WriteString("\n")
	return ceiling
}

func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func oneTput(im impl, test string, flags []string, chunk, total int) (mbs float64, stalled bool, err error) {
	srvRole, clRole := "echo-server", "echo-client"
	if test == "sink" {
		srvRole, clRole = "sink", "source"
	}
	f := common(flags...)
	f = append(f, "--bytes", strconv.Itoa(total), "--chunk", strconv.Itoa(chunk))
	res, err := runPair(im, srvRole, clRole, f, nil, 60, nil, 100*time.Millisecond)
	if err != nil {
		return 0, false, err
	}
	// The peers time the transfer themselves (first write to last echoed
	// byte / to the sink's ack); process start-up and dial are left out.
	wall := res.client.wall
	if us, err := strconv.ParseInt(field(res.client.result, "elapsed_us"), 10, 64); err == nil && us > 0 {
		wall = time.Duration(us) * time.Microsecond
	}
	if *verbose {
		logf("    %s %s %d: %v", im.name, test, chunk, wall)
	}
	if test == "sink" && wall > stallLimit {
		return 0, true, nil
	}
	return float64(total) / wall.Seconds() / 1e6, false, nil
}

// ---------------------------------------------------------------- CPU per GiB

func cpuPerGiB(md *strings.Builder, impls []impl) {
	runs, total := 3, 1<<30
	if *quick {
		runs = 1
	}
	fmt.Fprintf(md, "\n## CPU and memory for a 1 GiB transfer\n\n")
	fmt.Fprintf(md, "Source → sink, 1 GiB in 64 KiB writes, same flags as above. CPU = user + system time of both "+
		"processes (wait4 rusage) per GiB; peak RSS = VmHWM of each process, sampled from /proc every 20 ms (ru_maxrss of a child forked by Go includes the driver's own RSS at exec). Both peers generate and verify "+
		"the payload (SplitMix64 + CRC-32) inside their CPU time. The Rust peer runs with `--threads %d` "+
		"(1 = tokio current-thread runtime), the Go peer with Go's default GOMAXPROCS (= cores) and, for reference, "+
		"GOMAXPROCS=1. Median of %d runs.\n\n", *rustThreads, runs)
	md.WriteString("| settings | Rust CPU s/GiB | Go CPU s/GiB | Rust/Go | Go CPU s/GiB, GOMAXPROCS=1 | Rust/Go(1) | Rust RSS sender / receiver | Go RSS sender / receiver | RSS Rust/Go (max) | Rust MB/s | Go MB/s |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	impls = append(impls, impl{name: "go1", bin: impls[1].bin, env: []string{"GOMAXPROCS=1"}})
	for _, cc := range []cryptCfg{cryptCfgs[0], cryptCfgs[2]} {
		cpu := map[string][]float64{}
		rssS := map[string][]float64{}
		rssR := map[string][]float64{}
		tput := map[string][]float64{}
		for r := 0; r < runs; r++ {
			for _, im := range impls {
				f := append(common(cc.flags...), "--bytes", strconv.Itoa(total), "--chunk", "65536")
				res, err := runPair(im, "sink", "source", f, nil, 120, nil, 5*time.Second)
				if err != nil {
					logf("  %s cpu: %v", im.name, err)
					continue
				}
				c := (res.server.cpu() + res.client.cpu()).Seconds() / (float64(total) / (1 << 30))
				cpu[im.name] = append(cpu[im.name], c)
				rssS[im.name] = append(rssS[im.name], float64(res.client.maxRSS()))
				rssR[im.name] = append(rssR[im.name], float64(res.server.maxRSS()))
				tput[im.name] = append(tput[im.name], float64(total)/res.client.wall.Seconds()/1e6)
				if *verbose {
					logf("    %s cpu %.2f s/GiB rss %d/%d wall %v", im.name, c, res.client.maxRSS()>>20, res.server.maxRSS()>>20, res.client.wall)
				}
			}
		}
		rc, gc := median(cpu["rust"]), median(cpu["go"])
		rmax := max(median(rssS["rust"]), median(rssR["rust"]))
		gmax := max(median(rssS["go"]), median(rssR["go"]))
		logf("%-50s cpu rust %.2f go %.2f s/GiB ratio %s; rss max rust %.1f go %.1f MiB", cc.label, rc, gc, ratio(rc, gc), rmax/(1<<20), gmax/(1<<20))
		g1 := median(cpu["go1"])
		fmt.Fprintf(md, "| %s | %.2f | %.2f | **%s** | %.2f | %s | %.1f / %.1f MiB | %.1f / %.1f MiB | **%s** | %.0f | %.0f |\n",
			cc.label, rc, gc, ratio(rc, gc), g1, ratio(rc, g1),
			median(rssS["rust"])/(1<<20), median(rssR["rust"])/(1<<20),
			median(rssS["go"])/(1<<20), median(rssR["go"])/(1<<20), ratio(rmax, gmax),
			median(tput["rust"]), median(tput["go"]))
	}
}

// ---------------------------------------------------------------- latency

func latency(md *strings.Builder, impls []impl) {
	// Lossy rows pool their runs: a p99 is set by the ~1% of requests that
	// lose a packet twice, so one run of 1000 requests puts it at its 10th
	// slowest, a coin flip between one and two retransmission timeouts.
	runs, lossyRuns, count, lossyCount, bulkCount := 3, 5, 3000, 2000, 10000
	if *quick {
		runs, lossyRuns, count, lossyCount, bulkCount = 2, 2, 1000, 500, 3000
	}
	fmt.Fprintf(md, "\n## 64-byte request/response latency\n\n")
	fmt.Fprintf(md, "`rr-client` role: one 64-byte message, wait for its echo, repeat (%d requests clean, %d lossy); "+
		"fast3, AES-128. 0%% loss runs connect directly; 5%% loss runs go through interop/relay "+
		"(5%% loss each way, no reordering, a different seed per run and the same one for both implementations; the relay adds its own hop). "+
		"Clean rows: p50/p99 over the requests of a run, median over %d runs. Lossy rows: p50 is the median over %d runs; "+
		"p99 and p99.9 are over all %d runs' requests pooled (each run reports its slowest 5%%), "+
		"and `>50 ms` counts the requests that took over 50 ms (two retransmission timeouts) in all runs.\n\n",
		count, lossyCount, runs, lossyRuns, lossyRuns)
	md.WriteString("| loss | FEC | Rust p50 µs | Go p50 µs | p50 Rust/Go | Rust p99 µs | Go p99 µs | p99 Rust/Go | Rust / Go p99.9 µs | Rust / Go >50 ms |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, loss := range []float64{0, 0.05} {
		for _, fec := range []bool{false, true} {
			flags := common("--crypt", "aes-128")
			if fec {
				flags = append(flags, "--datashard", "10", "--parityshard", "3")
			}
			n := count
			var via func(string) (string, func())
			// One loss pattern per run, the same for both implementations:
			// with a single seed every run of an implementation would drop
			// the same datagrams, and its runs would not be independent.
			seed := int64(7)
			if loss > 0 {
				n = lossyCount
				via = func(addr string) (string, func()) {
					up, _ := net.ResolveUDPAddr("udp", addr)
					rl, err := relay.New(relay.Config{Upstream: up, Seed: seed,
						Up: relay.Impairment{Loss: loss}, Down: relay.Impairment{Loss: loss}})
					if err != nil {
						fatal("relay: " + err.Error())
					}
					return rl.Addr().String(), func() { rl.Close() }
				}
			}
			p50 := map[string][]float64{}
			p99 := map[string][]float64{}
			pool := map[string]*tailPool{}
			nruns := runs
			if loss > 0 {
				nruns = lossyRuns
			}
			for r := 0; r < nruns; r++ {
				seed = 7 + int64(r)
				for _, im := range impls {
					res, err := runPair(im, "echo-server", "rr-client", flags,
						[]string{"--chunk", "64", "--count", strconv.Itoa(n)}, 120, via, 5*time.Second)
					if err != nil {
						logf("  %s latency: %v", im.name, err)
						continue
					}
					a, _ := strconv.ParseFloat(field(res.client.result, "p50_us"), 64)
					b, _ := strconv.ParseFloat(field(res.client.result, "p99_us"), 64)
					p50[im.name] = append(p50[im.name], a)
					p99[im.name] = append(p99[im.name], b)
					if pool[im.name] == nil {
						pool[im.name] = &tailPool{}
					}
					pool[im.name].add(res.client.result)
				}
			}
			fecS := map[bool]string{true: "10/3", false: "off"}[fec]
			r50, g50, r99, g99 := median(p50["rust"]), median(p50["go"]), median(p99["rust"]), median(p99["go"])
			extra := "| "
			if loss > 0 {
				rp, gp := pool["rust"], pool["go"]
				r99, g99 = rp.quantile(0.99), gp.quantile(0.99)
				extra = fmt.Sprintf("%.0f / %.0f | %d / %d ", rp.quantile(0.999), gp.quantile(0.999), rp.over(50000), gp.over(50000))
			}
			logf("latency loss %.0f%% fec %s: p50 rust %.0f go %.0f, p99 rust %.0f go %.0f %s", loss*100, fecS, r50, g50, r99, g99, extra)
			fmt.Fprintf(md, "| %.0f%% | %s | %.0f | %.0f | **%s** | %.0f | %.0f | **%s** | %s|\n",
				loss*100, fecS, r50, g50, ratio(r50, g50), r99, g99, ratio(r99, g99), extra)
		}
	}
	// Beside a bulk flow on the same listener: is a small request queued
	// behind the bulk session's datagrams and CPU?
	for _, fec := range []bool{false, true} {
		flags := common("--crypt", "aes-128")
		if fec {
			flags = append(flags, "--datashard", "10", "--parityshard", "3")
		}
		p50 := map[string][]float64{}
		p99 := map[string][]float64{}
		for r := 0; r < runs; r++ {
			for _, im := range impls {
				cl, err := rrWithBulk(im, flags, bulkCount, 500*time.Millisecond)
				if err != nil {
					logf("  %s latency beside bulk: %v", im.name, err)
					continue
				}
				a, _ := strconv.ParseFloat(field(cl.result, "p50_us"), 64)
				b, _ := strconv.ParseFloat(field(cl.result, "p99_us"), 64)
				p50[im.name] = append(p50[im.name], a)
				p99[im.name] = append(p99[im.name], b)
			}
		}
		fecS := map[bool]string{true: "10/3", false: "off"}[fec]
		r50, g50, r99, g99 := median(p50["rust"]), median(p50["go"]), median(p99["rust"]), median(p99["go"])
		logf("latency beside bulk fec %s: p50 rust %.0f go %.0f, p99 rust %.0f go %.0f", fecS, r50, g50, r99, g99)
		fmt.Fprintf(md, "| 0%%, beside a bulk echo | %s | %.0f | %.0f | **%s** | %.0f | %.0f | **%s** | | |\n",
			fecS, r50, g50, ratio(r50, g50), r99, g99, ratio(r99, g99))
	}
	fmt.Fprintf(md, "\nBeside a bulk echo (%d requests, median over %d runs): the same echo-server also echoes one "+
		"echo-client session writing 64 KiB chunks without pause (started 0.5 s before the requests, stopped after "+
		"them; a run counts only if the bulk client kept at least 20%% of a core busy meanwhile), so both share the "+
		"listener, its socket and the 2 cores.\n", bulkCount, runs)
}

// rrWithBulk runs rr-client against an echo-server that also echoes a
// bulk flow: an echo-client writing 64 KiB chunks through the same listener,
// started first and given warmup to fill its window, stopped after.
func rrWithBulk(im impl, flags []string, n int, warmup time.Duration) (*proc, error) {
	to := []string{"--timeout", "120"}
	srv, err := spawn(im, append(append([]string{"--role", "echo-server", "--addr", "127.0.0.1:0"}, flags...), to...)...)
	if err != nil {
		return nil, err
	}
	defer srv.stop(time.Second)
	addr, err := srv.waitReady("LISTENING ", 10*time.Second)
	if err != nil {
		return nil, err
	}
	bulk, err := spawn(im, append(append(append([]string{"--role", "echo-client", "--addr", addr}, flags...),
		"--bytes", strconv.Itoa(64<<30), "--chunk", "65536"), to...)...)
	if err != nil {
		return nil, err
	}
	defer bulk.stop(100 * time.Millisecond)
	time.Sleep(warmup)
	select {
	case <-bulk.done:
		return nil, fmt.Errorf("bulk flow ended early: %s", bulk.result)
	default:
	}
	cl, err := spawn(im, append(append(append([]string{"--role", "rr-client", "--addr", addr}, flags...),
		"--chunk", "64", "--count", strconv.Itoa(n)), to...)...)
	if err != nil {
		return nil, err
	}
	cpu0, _ := procStat(bulk.cmd.Process.Pid)
	t0 := time.Now()
	cl.stdin.Close()
	<-cl.done
	cpu1, _ := procStat(bulk.cmd.Process.Pid)
	if !cl.ok() {
		return cl, fmt.Errorf("%s rr-client beside a bulk flow failed: %s", im.name, cl.result)
	}
	// The row means nothing unless the bulk flow was busy all along.
	busy := (cpu1 - cpu0).Seconds() / time.Since(t0).Seconds()
	if *verbose {
		logf("    %s bulk client used %.0f%% of a core beside the requests", im.name, 100*busy)
	}
	if busy < 0.2 {
		return cl, fmt.Errorf("%s bulk flow was idle (%.0f%% of a core) beside the requests", im.name, 100*busy)
	}
	return cl, nil
}

// tailPool pools the slowest requests of several rr-client runs (their
// tail_us fields) to estimate high quantiles over all their requests.
type tailPool struct {
	total int     // requests in all runs
	slow  []int64 // the reported slowest of each run, µs
}

func (t *tailPool) add(result string) {
	n, _ := strconv.Atoi(field(result, "count"))
	t.total += n
	for _, v := range strings.Split(field(result, "tail_us"), ",") {
		if us, err := strconv.ParseInt(v, 10, 64); err == nil {
			t.slow = append(t.slow, us)
		}
	}
}

// quantile returns the q-quantile over all pooled requests, or 0 when the
// runs' tails are too short to hold it.
func (t *tailPool) quantile(q float64) float64 {
	if t == nil || t.total == 0 {
		return 0
	}
	s := append([]int64(nil), t.slow...)
	sort.Slice(s, func(i, j int) bool { return s[i] > s[j] })
	k := int(float64(t.total)*(1-q) + 0.5) // rank from the slowest, 1-based
	if k < 1 {
		k = 1
	}
	if k > len(s) {
		return 0
	}
	return float64(s[k-1])
}

func (t *tailPool) over(us int64) int {
	n := 0
	if t != nil {
		for _, v := range t.slow {
			if v > us {
				n++
			}
		}
	}
	return n
}

// ---------------------------------------------------------------- idle sessions

// procStat returns utime+stime and VmRSS (bytes) of a live process.
func procStat(pid int) (time.Duration, int64) {
	var cpu time.Duration
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			// Fields after the name: state is [0], utime [11], stime [12] (clock ticks, 100 Hz).
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(u+st) * 10 * time.Millisecond
			}
		}
	}
	return cpu, procField(pid, "VmRSS:")
}

func idle(md *strings.Builder, impls []impl) {
	runs, window := 2, 10*time.Second
	if *quick {
		runs, window = 1, 5*time.Second
	}
	fmt.Fprintf(md, "\n## Idle established sessions on one listener\n\n")
	fmt.Fprintf(md, "`idle-client` opens N sessions to one `echo-server` (64 concurrent dials), echoes one 64-byte "+
		"message on each, then keeps them all open. After a 2 s settle the server's CPU (utime+stime from "+
		"/proc/PID/stat) is sampled over %s (shortened from 30 s to keep the run short); RSS per session = "+
		"(server VmRSS then − VmRSS before the first dial) / N. fast3, AES-128, no FEC. Median of %d runs.\n\n", window, runs)
	md.WriteString("| sessions | Rust CPU % | Go CPU % | CPU Rust/Go | Rust RSS/session | Go RSS/session | RSS Rust/Go |\n|---|---|---|---|---|---|---|\n")
	for _, n := range idleCounts {
		cpu := map[string][]float64{}
		rss := map[string][]float64{}
		for r := 0; r < runs; r++ {
			for _, im := range impls {
				c, m, err := oneIdle(im, n, window)
				if err != nil {
					logf("  %s idle %d: %v", im.name, n, err)
					continue
				}
				cpu[im.name] = append(cpu[im.name], c)
				rss[im.name] = append(rss[im.name], m)
			}
		}
		rc, gc, rm, gm := median(cpu["rust"]), median(cpu["go"]), median(rss["rust"]), median(rss["go"])
		logf("idle %d: cpu rust %.2f%% go %.2f%%, rss/session rust %.0f go %.0f B", n, rc, gc, rm, gm)
		fmt.Fprintf(md, "| %d | %.2f | %.2f | **%s** | %.1f KiB | %.1f KiB | **%s** |\n",
			n, rc, gc, ratio(max(rc, 0.01), gc), rm/1024, gm/1024, ratio(rm, gm))
	}
	md.WriteString("\n(A CPU ratio with Rust at 0.00% is computed with 0.01%, one tick of /proc resolution over the window being 0.1%.)\n")
}

func oneIdle(im impl, n int, window time.Duration) (cpuPct, rssPer float64, err error) {
	flags := common("--crypt", "aes-128", "--chunk", "64", "--timeout", "300")
	srv, err := spawn(im, append([]string{"--role", "echo-server", "--addr", "127.0.0.1:0"}, flags...)...)
	if err != nil {
		return 0, 0, err
	}
	defer srv.stop(10 * time.Second)
	addr, err := srv.waitReady("LISTENING ", 10*time.Second)
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(200 * time.Millisecond)
	_, rss0 := procStat(srv.cmd.Process.Pid)
	cl, err := spawn(im, append([]string{"--role", "idle-client", "--addr", addr, "--count", strconv.Itoa(n)}, flags...)...)
	if err != nil {
		return 0, 0, err
	}
	defer cl.stop(10 * time.Second)
	if _, err := cl.waitReady("READY ", 120*time.Second); err != nil {
		return 0, 0, err
	}
	time.Sleep(2 * time.Second)
	c0, _ := procStat(srv.cmd.Process.Pid)
	t0 := time.Now()
	time.Sleep(window)
	c1, rss1 := procStat(srv.cmd.Process.Pid)
	select {
	case <-srv.done:
		return 0, 0, fmt.Errorf("server exited while idle: %v %s", srv.err, srv.result)
	case <-cl.done:
		return 0, 0, fmt.Errorf("client exited while idle: %v %s", cl.err, cl.result)
	default:
	}
	el := time.Since(t0)
	return float64(c1-c0) / float64(el) * 100, float64(rss1-rss0) / float64(n), nil
}

// ---------------------------------------------------------------- many sessions

// manyCounts are the concurrent session counts of the many-session rows.
var manyCounts = []int{16, 256, 2000}

// manyBytes is what each of n sessions echoes: 64 KiB (the 2,000-client
// scenario of issue 14), or more where n is small, so that every row moves at
// least manyTotal and its goodput and CPU are not process start-up.
func manyBytes(n int) int {
	return max(64<<10, manyTotal/n)
}

// manyTotal is the least a many-session row echoes in all.
const manyTotal = 64 << 20

// manyStallLimit is the stall the many-session rows count runs over.
const manyStallLimit = 2000.0

// manyShardsPerCore: receive shards of our many-session server per core.
// Measured at 2,000 sessions on 2 cores: with 1 shard per core a burst of
// first flights (2,000 × 47 datagrams at once) overflowed the server sockets
// (1,800-80,000 drops, recovered by RTO backoff: 4-6 s); with 2 per core
// 5,000-10,000; with 4 per core 5 runs in 14 still dropped (up to 82,000);
// with 8 per core none of 16 did (1.9-2.7 s).
const manyShardsPerCore = 8

// many: N kcp-go clients (the Go peer's many-client, the same driver for
// both servers) each echo manyBytes(N) at once through one echo-server: ours
// with manyShardsPerCore receive shards per core (--shards) on a worker per
// core, or kcp-go's listener at GOMAXPROCS = cores.
func many(md *strings.Builder, impls []impl) {
	var client impl
	for _, im := range impls {
		if im.name == "go" {
			client = im
		}
	}
	cores := runtime.NumCPU()
	fmt.Fprintf(md, "\n## Many concurrent sessions on one listener\n\n")
	fmt.Fprintf(md, "`many-client` (the Go peer: N kcp-go sessions started at once) echoes max(64 KiB, 64 MiB / N) on each of N "+
		"sessions through one `echo-server`, ours (`--threads %d --shards %d`: a worker per core and %d receive shards per core, "+
		"SO_REUSEPORT) or kcp-go's (GOMAXPROCS %d). Time: first dial to last echo byte; goodput: bytes echoed / time; CPU: the "+
		"server's utime+stime per GiB echoed (the client's beside it: both share the machine's cores, so a "+
		"cheaper server leaves the kcp-go client more CPU); stall: the longest any session waited for its next echo bytes (from its dial "+
		"to its first echo included), worst over the runs, and the runs in which some session waited over %.0f s. "+
		"fast3, AES-128, no FEC, 16 KiB writes. Median of 3 runs (10 at 2,000 sessions; failed runs are counted, not timed).\n\n",
		cores, cores*manyShardsPerCore, manyShardsPerCore, runtime.GOMAXPROCS(0), manyStallLimit/1000)
	md.WriteString("| sessions | KiB each | Rust s | Go s | time Rust/Go | Rust MB/s | Go MB/s | goodput Rust/Go | Rust CPU s/GiB | Go CPU s/GiB | CPU Rust/Go | client CPU s/GiB vs Rust / Go | max stall Rust / Go ms | runs stalled > 2 s Rust / Go | failed runs Rust / Go |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range manyCounts {
		runs := 3
		if n >= 2000 {
			runs = 10
		}
		if *quick {
			runs = 1
		}
		secs := map[string][]float64{}
		cpu := map[string][]float64{}
		ccpu := map[string][]float64{}
		stall := map[string][]float64{}
		stalled := map[string]int{}
		failed := map[string]int{}
		for r := 0; r < runs; r++ {
			for _, im := range impls {
				el, c, cc, st, err := oneMany(im, client, n)
				if err != nil {
					failed[im.name]++
					logf("  %s many %d: %v", im.name, n, err)
					continue
				}
				secs[im.name] = append(secs[im.name], el)
				cpu[im.name] = append(cpu[im.name], c)
				ccpu[im.name] = append(ccpu[im.name], cc)
				stall[im.name] = append(stall[im.name], st)
				if st > manyStallLimit {
					stalled[im.name]++
				}
			}
		}
		rs, gs := median(secs["rust"]), median(secs["go"])
		mb := float64(n) * float64(manyBytes(n)) / 1e6
		rmb, gmb := 0.0, 0.0
		if rs > 0 {
			rmb = mb / rs
		}
		if gs > 0 {
			gmb = mb / gs
		}
		rc, gc := median(cpu["rust"]), median(cpu["go"])
		logf("many %d: rust %.2fs go %.2fs, cpu/GiB rust %.2f go %.2f, stalled runs %d/%d", n, rs, gs, rc, gc, stalled["rust"], stalled["go"])
		fmt.Fprintf(md, "| %d | %d | %.2f | %.2f | **%s** | %.1f | %.1f | **%s** | %.2f | %.2f | **%s** | %.2f / %.2f | %.0f / %.0f | %d / %d of %d | %d / %d |\n",
			n, manyBytes(n)>>10, rs, gs, ratio(rs, gs), rmb, gmb, ratio(rmb, gmb), rc, gc, ratio(rc, gc),
			median(ccpu["rust"]), median(ccpu["go"]),
			slices.Max(append(stall["rust"], 0)), slices.Max(append(stall["go"], 0)), stalled["rust"], stalled["go"], runs,
			failed["rust"], failed["go"])
	}
}

// oneMany runs one many-session echo against server's echo-server; returns
// seconds, server and client CPU seconds per GiB echoed, and the worst stall
// in ms.
func oneMany(server, client impl, n int) (secs, cpuPerGiB, clientPerGiB, stallMs float64, err error) {
	flags := common("--crypt", "aes-128", "--timeout", "300")
	sargs := append([]string{"--role", "echo-server", "--addr", "127.0.0.1:0"}, flags...)
	if server.name == "rust" {
		// A worker per core, whatever --rust-threads says for the other
		// rows, and manyShardsPerCore shards per core.
		cores := runtime.NumCPU()
		sargs = append(sargs, "--shards", strconv.Itoa(cores*manyShardsPerCore))
		server.extra = []string{"--threads", strconv.Itoa(cores)}
	}
	srv, err := spawn(server, sargs...)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	addr, err := srv.waitReady("LISTENING ", 10*time.Second)
	if err != nil {
		srv.stop(5 * time.Second)
		return 0, 0, 0, 0, err
	}
	cl, err := spawn(client, append([]string{"--role", "many-client", "--addr", addr, "--count", strconv.Itoa(n),
		"--bytes", strconv.Itoa(manyBytes(n)), "--chunk", "16384"}, flags...)...)
	if err != nil {
		srv.stop(5 * time.Second)
		return 0, 0, 0, 0, err
	}
	cl.stdin.Close()
	<-cl.done
	srv.stop(10 * time.Second)
	if !cl.ok() {
		return 0, 0, 0, 0, fmt.Errorf("many-client failed: %s", cl.result)
	}
	ms, _ := strconv.ParseFloat(field(cl.result, "elapsed_ms"), 64)
	st, _ := strconv.ParseFloat(field(cl.result, "max_stall_ms"), 64)
	gib := float64(n) * float64(manyBytes(n)) / (1 << 30)
	return ms / 1000, srv.cpu().Seconds() / gib, cl.cpu().Seconds() / gib, st, nil
}

// ---------------------------------------------------------------- micro benches

var microRe = regexp.MustCompile(`^Benchmark(Crypt\w+/\w+)-\d+\s.*?([\d.]+) cpuMB/s`)
var criterionName = regexp.MustCompile(`^(raw|datagram)/(\w+)`)
var criterionThrpt = regexp.MustCompile(`thrpt:\s*\[\s*\S+ \S+\s+(\S+) (\S+)`)
var fecRe = regexp.MustCompile(`^(rust|go) (.*?)(?: \(\w+\))? min-batch: ([\d.]+) ns`)

func micro(md *strings.Builder) {
	passes := 3
	if *quick {
		passes = 1
	}
	logf("micro benches: building cargo bench binaries")
	c := exec.Command("cargo", "bench", "--no-run", "--bench", "crypt", "--bench", "fec", "--message-format=json")
	c.Dir = repoRoot
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		fatal("cargo bench --no-run: " + err.Error())
	}
	bins := map[string]string{}
	for _, m := range regexp.MustCompile(`"executable":"([^"]*/(crypt|fec)-[0-9a-f]+)"`).FindAllStringSubmatch(string(out), -1) {
		bins[m[2]] = m[1]
	}
	names := []string{"Raw/AES128", "Raw/Salsa20", "Datagram/AES128", "Datagram/Salsa20", "Datagram/AESGCM", "Datagram/None"}
	crypt := map[string]map[string][]float64{"rust": {}, "go": {}}
	fec := map[string]map[string][]float64{"rust": {}, "go": {}}
	for p := 0; p < passes; p++ {
		// Rust crypt (criterion, thread CPU time, decimal MB/s).
		rc := exec.Command(bins["crypt"], "--bench", `^(raw/(AES128|Salsa20)|datagram/(AES128|Salsa20|AESGCM|None))$`,
			"--warm-up-time", "0.5", "--measurement-time", "2", "--noplot")
		rc.Dir = repoRoot
		o, _ := rc.CombinedOutput()
		cur := ""
		for _, l := range strings.Split(string(o), "\n") {
			if m := criterionName.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
				cur = strings.ToUpper(m[1][:1]) + m[1][1:] + "/" + m[2]
			}
			if m := criterionThrpt.FindStringSubmatch(l); m != nil && cur != "" {
				v, _ := strconv.ParseFloat(m[1], 64)
				if strings.HasPrefix(m[2], "GB") {
					v *= 1000
				}
				crypt["rust"][cur] = append(crypt["rust"][cur], v)
				cur = ""
			}
		}
		// Go crypt.
		// -bench splits its pattern at '/', one regexp per level.
		gc := exec.Command("go", "test", "./vectors/", "-run", "^$", "-count", "1", "-benchtime", "1s",
			"-bench", `^BenchmarkCrypt(Raw|Datagram)$/^(AES128|Salsa20|AESGCM|None)$`)
		o, _ = gc.CombinedOutput()
		for _, l := range strings.Split(string(o), "\n") {
			if m := microRe.FindStringSubmatch(l); m != nil {
				v, _ := strconv.ParseFloat(m[2], 64)
				k := strings.TrimPrefix(m[1], "Crypt")
				crypt["go"][k] = append(crypt["go"][k], v)
			}
		}
		// FEC, min over batches, both sides.
		rf := exec.Command(bins["fec"])
		rf.Dir = repoRoot
		rf.Env = append(os.Environ(), "FEC_MIN_BATCH=1")
		o1, _ := rf.CombinedOutput()
		gf := exec.Command("go", "test", "-count=1", "-v", "-run", "^TestFecGoSpeed$", "./vectors/")
		gf.Env = append(os.Environ(), "FEC_MIN_BATCH=1")
		o2, _ := gf.CombinedOutput()
		for _, l := range strings.Split(string(o1)+"\n"+string(o2), "\n") {
			l = strings.TrimSpace(l)
			if i := strings.Index(l, "rust "); i >= 0 {
				l = l[i:]
			} else if i := strings.Index(l, "go "); i >= 0 {
				l = l[i:]
			}
			if m := fecRe.FindStringSubmatch(l); m != nil {
				v, _ := strconv.ParseFloat(m[3], 64)
				fec[m[1]][m[2]] = append(fec[m[1]][m[2]], v)
			}
		}
	}
	fmt.Fprintf(md, "\n## Cipher and FEC micro-benchmarks\n\n")
	fmt.Fprintf(md, "Crypto: `benches/crypt.rs` (criterion, CPU time of the benchmark thread) vs "+
		"interop/vectors/crypt_bench_test.go (`go test -bench Crypt`, same loop bodies, same cpuMB/s unit). "+
		"`Raw/X` = kcp-go's BenchmarkX shape (Encrypt+Decrypt of 1500 bytes, 3000 bytes per op); "+
		"`Datagram/X` = nonce + CRC + encrypt + decrypt + verify of one 1400-byte datagram. Median of %d passes.\n\n", passes)
	md.WriteString("| benchmark | Rust MB/s | Go MB/s | Rust/Go |\n|---|---|---|---|\n")
	for _, n := range names {
		r, g := median(crypt["rust"][n]), median(crypt["go"][n])
		fmt.Fprintf(md, "| %s | %.0f | %.0f | **%s** |\n", n, r, g, ratio(r, g))
	}
	md.WriteString("\nFEC: `FEC_MIN_BATCH=1 cargo bench --bench fec` vs `FEC_MIN_BATCH=1 go test -run TestFecGoSpeed ./vectors/` " +
		"(kcp-go's BenchmarkFECEncode/Decode loop bodies, 1500-byte packets, 10/3; minimum over batches). " +
		"For the RS group rows the Rust figure is the fastest kernel path this CPU offers.\n\n")
	md.WriteString("| operation | Rust ns | Go ns | Rust/Go (time) |\n|---|---|---|---|\n")
	keys := []string{}
	for k := range fec["go"] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := median(fec["go"][k])
		rk := strings.Replace(k, "x 1392", "x 1392", 1)
		rv := fec["rust"][rk]
		// Several kernel paths: keep the best per pass.
		r := 0.0
		if len(rv) > 0 {
			sort.Float64s(rv)
			r = rv[0]
		}
		fmt.Fprintf(md, "| %s | %.1f | %.1f | **%s** |\n", k, r, g, ratio(r, g))
	}
}

var idleCounts = []int{1000, 10000}
