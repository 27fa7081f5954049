package interop

// Process plumbing of the live matrix: which binaries fill the Go and Rust
// slots, starting peers, reading their LISTENING / RESULT / SNMP lines, and
// killing them whatever happens.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"

	"kcpsession/interop/peer"
)

// asPeerEnv makes the test binary run as the Go peer instead of running
// tests: the harness re-executes itself, so the Go peer is always built
// against exactly the kcp-go version this test run uses (go.mod,
// go.v5664.mod or go.v576.mod).
const asPeerEnv = "KCP_INTEROP_AS_PEER"

// defaultParallel is how many cells run at once unless -parallel is given:
// most cells wait on KCP timers rather than burn CPU, so more than GOMAXPROCS.
const defaultParallel = 6

func TestMain(m *testing.M) {
	if os.Getenv(asPeerEnv) == "1" {
		os.Exit(peer.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		n := defaultParallel
		if v, err := strconv.Atoi(os.Getenv("KCP_INTEROP_PARALLEL")); err == nil && v > 0 {
			n = v
		}
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
	os.Exit(m.Run())
}

// impl is one implementation that can fill a slot of a cell.
type impl struct {
	name string   // "go" or "rust" (what the slot stands for)
	path string   // executable
	env  []string // extra environment
	desc string   // for messages: what binary this really is
}

func goPeer(t testing.TB) impl {
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("cannot locate the test binary to run it as the Go peer: %v", err)
	}
	return impl{name: "go", path: exe, env: []string{asPeerEnv + "=1"},
		desc: "Go peer (kcp-go " + kcpGoVersion() + ", this test binary)"}
}

// kcpGoVersion is the kcp-go version compiled into this test binary. Test
// binaries carry no module list in their build info, but the source path of
// a kcp-go function names the module version (…/kcp-go/v5@v5.6.72/crypt.go).
func kcpGoVersion() string {
	file, _ := runtime.FuncForPC(reflect.ValueOf(kcp.NewAESBlockCrypt).Pointer()).FileLine(0)
	if _, after, ok := strings.Cut(filepath.ToSlash(file), "/kcp-go/v5@"); ok {
		if v, _, ok := strings.Cut(after, "/"); ok {
			return v
		}
	}
	return "unknown (" + file + ")"
}

// cargoBuildTimeout bounds the one release build of the Rust peer (a cold
// build of the crate and its dependencies takes minutes on 2 cores).
const cargoBuildTimeout = 20 * time.Minute

var (
	rustOnce sync.Once
	rustImpl impl
	rustErr  error
)

// rustPeer returns the implementation for the Rust slot: $KCP_RUST_PEER if
// set ("go" means the Go peer, for self-testing the harness), else the
// examples/kcp_peer binary built once with cargo. A Rust peer that cannot be
// built fails the test: the matrix never silently runs Go against Go.
func rustPeer(t testing.TB, summary string) impl {
	rustOnce.Do(func() {
		rustImpl, rustErr = findRustPeer(t)
		// examples/kcp_peer reads KCP_PEER_API (tokio by default, or
		// blocking: kcp_session::blocking); say which one ran.
		if api := os.Getenv("KCP_PEER_API"); api != "" && rustErr == nil {
			rustImpl.desc += " (KCP_PEER_API=" + api + ")"
		}
		// and KCP_PEER_SHARDS (listener receive shards, 1 by default).
		if n := os.Getenv("KCP_PEER_SHARDS"); n != "" && rustErr == nil {
			rustImpl.desc += " (KCP_PEER_SHARDS=" + n + ")"
		}
	})
	if rustErr != nil {
		fmt.Printf("%s (kcp-go %s): FAILED, no Rust peer to test\n", summary, kcpGoVersion())
		t.Fatalf("interop: no Rust peer: %v", rustErr)
	}
	return rustImpl
}

func findRustPeer(t testing.TB) (impl, error) {
	if p := os.Getenv("KCP_RUST_PEER"); p != "" {
		if p == "go" {
			if os.Getenv("CI") == "true" {
				return impl{}, errors.New("KCP_RUST_PEER=go under CI=true: CI must test the real Rust peer, not Go against Go")
			}
			g := goPeer(t)
			g.name, g.desc = "rust", "KCP_RUST_PEER=go: the Go peer stands in for Rust"
			return g, nil
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return impl{}, err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return impl{}, fmt.Errorf("KCP_RUST_PEER=%s is not an executable file", p)
		}
		return impl{name: "rust", path: abs, desc: "KCP_RUST_PEER=" + abs}, nil
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return impl{}, err
	}
	if _, err := os.Stat(filepath.Join(root, "examples", "kcp_peer.rs")); err != nil {
		return impl{}, fmt.Errorf("%s does not exist, so the Rust side cannot be tested "+
			"(set KCP_RUST_PEER=go to exercise the harness with the Go peer in both slots)",
			filepath.Join(root, "examples", "kcp_peer.rs"))
	}
	if _, err := exec.LookPath("cargo"); err != nil {
		return impl{}, errors.New("cargo is not installed, cannot build examples/kcp_peer.rs")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cargoBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cargo", "build", "--release", "--example", "kcp_peer", "--message-format=json-render-diagnostics")
	cmd.Dir = root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return impl{}, fmt.Errorf("`cargo build --release --example kcp_peer` failed (%v):\n%s", err, tail(errb.String(), 4000))
	}
	// Ask cargo where the binary is rather than guessing the target dir.
	var exe string
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var msg struct {
			Reason     string  `json:"reason"`
			Executable *string `json:"executable"`
			Target     struct {
				Name string `json:"name"`
			} `json:"target"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) == nil && msg.Reason == "compiler-artifact" &&
			msg.Target.Name == "kcp_peer" && msg.Executable != nil {
			exe = *msg.Executable
		}
	}
	if exe == "" {
		return impl{}, errors.New("cargo built examples/kcp_peer but reported no executable")
	}
	t.Logf("built the Rust peer in %v: %s", time.Since(start).Round(time.Millisecond), exe)
	return impl{name: "rust", path: exe, desc: "Rust peer " + exe}, nil
}

// output collects a child's stdout, line by line.
type output struct {
	mu        sync.Mutex
	all       bytes.Buffer
	partial   []byte
	lines     []string
	listening chan string
}

func newOutput() *output { return &output{listening: make(chan string, 1)} }

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all.Write(b)
	o.partial = append(o.partial, b...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(o.partial[:i]), "\r")
		o.partial = o.partial[i+1:]
		o.lines = append(o.lines, line)
		if rest, ok := strings.CutPrefix(line, "LISTENING "); ok {
			select {
			case o.listening <- strings.TrimSpace(rest):
			default:
			}
		}
	}
	return len(b), nil
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.String()
}

// lockedBuffer is a bytes.Buffer safe for the exec copier and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is one running peer.
type proc struct {
	label  string // e.g. "rust echo-server"
	im     impl
	args   []string
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	stdout *output
	stderr *lockedBuffer
	done   chan struct{}
	err    error // from Wait, valid after done
	killed bool
}

// startPeer launches a peer; t.Cleanup kills it if it is still running.
func startPeer(t testing.TB, im impl, args []string) (*proc, error) {
	p := &proc{im: im, args: args, stdout: newOutput(), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.label = im.name + " " + argValue(args, "--role")
	p.cmd = exec.Command(im.path, args...)
	p.cmd.Env = append(os.Environ(), im.env...)
	if im.name == "rust" && len(im.env) == 0 {
		// Never let a real Rust peer inherit the re-exec switch.
		p.cmd.Env = withoutEnv(p.cmd.Env, asPeerEnv)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 2 * time.Second
	in, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p.stdin = in
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", p.label, im.path, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p, nil
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.killed = true
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitListening waits for the LISTENING line.
func (p *proc) waitListening(d time.Duration) (string, error) {
	select {
	case addr := <-p.stdout.listening:
		return addr, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited (%v) before printing LISTENING", p.label, p.err)
	case <-time.After(d):
		return "", fmt.Errorf("%s printed no LISTENING line within %v", p.label, d)
	}
}

// wait waits for the process to exit, killing it after d.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
	case <-time.After(d):
		p.kill()
		return fmt.Errorf("%s did not exit within %v and was killed", p.label, d)
	}
	return nil
}

// stop asks a server to finish (stdin closed) and waits for it.
func (p *proc) stop(d time.Duration) error {
	_ = p.stdin.Close()
	return p.wait(d)
}

func (p *proc) exitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// describe is the full story of a process for a failure message: how to
// rerun it and everything it printed.
func (p *proc) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "    %s [%s]\n      command: %s\n", p.label, p.im.desc, p.commandLine())
	select {
	case <-p.done:
		fmt.Fprintf(&b, "      exit: %d", p.exitCode())
		if p.killed {
			b.WriteString(" (killed by the harness)")
		}
		b.WriteString("\n")
	default:
		b.WriteString("      exit: still running\n")
	}
	fmt.Fprintf(&b, "      stdout: %s\n", indent(tail(p.stdout.text(), 3000)))
	if e := strings.TrimSpace(p.stderr.String()); e != "" {
		fmt.Fprintf(&b, "      stderr: %s\n", indent(tail(e, 3000)))
	}
	return b.String()
}

// commandLine is how to rerun the process by hand (the test binary that
// plays the Go peer is deleted after the run, so name cmd/gopeer instead).
func (p *proc) commandLine() string {
	if len(p.im.env) > 0 && p.im.env[0] == asPeerEnv+"=1" {
		mod := ""
		switch v := kcpGoVersion(); {
		case v == "v5.6.64":
			mod = "-modfile=go.v5664.mod "
		case strings.HasPrefix(v, "v5.7"):
			mod = "-modfile=go.v576.mod "
		}
		return "(cd interop && go run " + mod + "./cmd/gopeer " + shellJoin(p.args) + ")"
	}
	return p.im.path + " " + shellJoin(p.args)
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"$\\") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(nothing)"
	}
	return strings.ReplaceAll(s, "\n", "\n              ")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// report is a parsed RESULT + SNMP pair.
type report struct {
	role   string
	bytes  int64
	crc    uint32
	ok     bool
	fields map[string]string
	reason string
	snmp   map[string]uint64
}

// requiredSNMP are the counters every peer must print (README contract).
var requiredSNMP = []string{"InPkts", "OutPkts", "InCsumErrors", "KCPInErrors", "RetransSegs",
	"FECRecovered", "FECErrs", "FECParityShards"}

// parseReport extracts the last RESULT and SNMP lines of a finished process.
func (p *proc) report() (*report, error) {
	p.stdout.mu.Lock()
	lines := append([]string(nil), p.stdout.lines...)
	p.stdout.mu.Unlock()
	var res, snmp string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "RESULT "):
			res = l
		case strings.HasPrefix(l, "SNMP"):
			snmp = l
		}
	}
	if res == "" {
		return nil, fmt.Errorf("%s printed no RESULT line", p.label)
	}
	if snmp == "" {
		return nil, fmt.Errorf("%s printed no SNMP line", p.label)
	}
	r := &report{fields: map[string]string{}, snmp: map[string]uint64{}}
	body := strings.TrimPrefix(res, "RESULT ")
	if before, after, found := strings.Cut(body, " reason="); found {
		body, r.reason = before, after
	} else if strings.HasPrefix(body, "reason=") {
		body, r.reason = "", strings.TrimPrefix(body, "reason=")
	}
	for _, kv := range strings.Fields(body) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed RESULT field %q in %q", p.label, kv, res)
		}
		r.fields[k] = v
	}
	for _, k := range []string{"role", "bytes", "crc32", "ok"} {
		if _, ok := r.fields[k]; !ok {
			return nil, fmt.Errorf("%s: RESULT lacks %s= in %q", p.label, k, res)
		}
	}
	var err error
	r.role = r.fields["role"]
	if r.bytes, err = strconv.ParseInt(r.fields["bytes"], 10, 64); err != nil {
		return nil, fmt.Errorf("%s: RESULT bytes=%q: %v", p.label, r.fields["bytes"], err)
	}
	c, err := strconv.ParseUint(r.fields["crc32"], 16, 32)
	if err != nil {
		return nil, fmt.Errorf("%s: RESULT crc32=%q: %v", p.label, r.fields["crc32"], err)
	}
	r.crc = uint32(c)
	switch r.fields["ok"] {
	case "true":
		r.ok = true
	case "false":
	default:
		return nil, fmt.Errorf("%s: RESULT ok=%q", p.label, r.fields["ok"])
	}
	for _, kv := range strings.Fields(strings.TrimPrefix(snmp, "SNMP")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed SNMP field %q", p.label, kv)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: SNMP %s=%q is not a number", p.label, k, v)
		}
		r.snmp[k] = n
	}
	for _, k := range requiredSNMP {
		if _, ok := r.snmp[k]; !ok {
			return nil, fmt.Errorf("%s: SNMP line lacks %s", p.label, k)
		}
	}
	return r, nil
}

// payloadCRC is the CRC-32 of the concatenated payloads for (seed, size)
// pairs, computed independently of any peer.
func payloadCRC(parts ...[2]int64) uint32 {
	var crc uint32
	buf := make([]byte, 1<<16)
	for _, p := range parts {
		gen := peer.NewPayload(uint64(p[0]))
		for left := p[1]; left > 0; {
			n := min(left, int64(len(buf)))
			gen.Fill(buf[:n])
			crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
			left -= n
		}
	}
	return crc
}
