package vectors

// FEC vectors (docs/wire.md §11 items 6-9) for tests/fec_vectors.rs.
//
//	go test -modfile=M ./vectors/                    regenerate in memory, fail on any difference
//	UPDATE_VECTORS=1 go test -modfile=M ./vectors/   rewrite tests/vectors/fec_*.json
//
// M is go.mod (kcp-go v5.6.72), go.v5664.mod (v5.6.64) or go.v576.mod
// (v5.7.6). The kcp-go version under test is the one this test binary was
// built with (runtime/debug.ReadBuildInfo), so the modfile decides it.
// Vectors that differ between versions are kept per version, never
// overwritten: fec_X.json is shared by every build listed in its
// "built_with"; a build whose output differs gets fec_X.<version>.json
// (e.g. fec_decoder.v5.7.6.json), which then takes precedence for it.
// After changing the generator, delete tests/vectors/fec_*.json and run the
// update once per modfile: go.mod, go.v5664.mod, then go.v576.mod.
//
// RS vectors come straight from klauspost/reedsolomon (the version kcp-go
// pins). Encoder, decoder and auto-tune are unexported in kcp-go, so
// fec_inpkg_gen.go.tmpl (our code) runs inside a temporary copy of the
// kcp-go package taken from the module cache; that copy never enters the
// repository.

import (
	"bytes"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/reedsolomon"
	// The version under test is the one linked in (see fecBuild).
	kcp "github.com/xtaci/kcp-go/v5"
)

//go:embed fec_inpkg_gen.go.tmpl
var fecInPackageGenerator string

const fecKcpGoModule = "github.com/xtaci/kcp-go/v5"

// fecVectorDir is tests/vectors relative to this package's directory.
var fecVectorDir = filepath.Join("..", "..", "tests", "vectors")

type fecRand uint64

func (r *fecRand) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint64(*r)
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		*r = fecRand(x)
		b[i] = byte(x >> 32)
	}
	return b
}

func fecHexAll(shards [][]byte) []string {
	out := make([]string, len(shards))
	for i, s := range shards {
		if s != nil {
			out[i] = hex.EncodeToString(s)
		}
	}
	return out
}

type fecRSReconstruct struct {
	// Shards as given to ReconstructData; "" marks an erased shard.
	Shards []string `json:"shards"`
	// Consistent is false when the shards are random bytes rather than a
	// codeword: the result then depends on which shards the decoder uses.
	Consistent bool `json:"consistent"`
	// Data shards after ReconstructData.
	Data []string `json:"data"`
}

type fecRSCase struct {
	DataShards   int                `json:"data_shards"`
	ParityShards int                `json:"parity_shards"`
	ShardLen     int                `json:"shard_len"`
	Data         []string           `json:"data"`
	Parity       []string           `json:"parity"`
	Reconstruct  []fecRSReconstruct `json:"reconstruct"`
}

// fecBuild returns the versions of kcp-go and reedsolomon this test binary
// was built with (the modfile chose them). Test binaries carry no module
// list in runtime/debug.ReadBuildInfo, so the versions are read from the
// source paths the linker recorded for one function of each module
// (".../github.com/xtaci/kcp-go/v5@v5.7.6/sess.go").
func fecBuild(t *testing.T) (kcpVersion, rsVersion string) {
	version := func(module string, fn any) string {
		pc := reflect.ValueOf(fn).Pointer()
		file, _ := runtime.FuncForPC(pc).FileLine(pc)
		file = filepath.ToSlash(file)
		i := strings.Index(file, module+"@")
		if i < 0 {
			t.Fatalf("cannot tell the version of %s from %q", module, file)
		}
		v := file[i+len(module)+1:]
		if j := strings.IndexByte(v, '/'); j >= 0 {
			v = v[:j]
		}
		return v
	}
	return version(fecKcpGoModule, kcp.DialWithOptions),
		version("github.com/klauspost/reedsolomon", reedsolomon.New)
}

func fecRSVectors(t *testing.T) []fecRSCase {
	configs := []struct{ d, p, n int }{
		{1, 1, 5}, {2, 1, 33}, {3, 2, 100}, {10, 3, 300}, {20, 10, 64}, {128, 128, 16},
	}
	r := fecRand(0x0123456789ABCDEF)
	var cases []fecRSCase
	for _, c := range configs {
		enc, err := reedsolomon.New(c.d, c.p)
		if err != nil {
			t.Fatal(err)
		}
		shards := make([][]byte, c.d+c.p)
		for i := range shards {
			if i < c.d {
				shards[i] = r.bytes(c.n)
			} else {
				shards[i] = make([]byte, c.n)
			}
		}
		if err := enc.Encode(shards); err != nil {
			t.Fatal(err)
		}
		rc := fecRSCase{DataShards: c.d, ParityShards: c.p, ShardLen: c.n,
			Data: fecHexAll(shards[:c.d]), Parity: fecHexAll(shards[c.d:])}

		// Erasure patterns: the first min(p, d) data shards; data 0 plus the
		// last parity shard; and the last p shards of the codeword.
		var patterns [][]int
		var first []int
		for i := 0; i < c.p && i < c.d; i++ {
			first = append(first, i)
		}
		patterns = append(patterns, first)
		if c.p >= 2 {
			patterns = append(patterns, []int{0, c.d + c.p - 1})
		}
		var last []int
		for i := c.d + c.p - c.p; i < c.d+c.p; i++ {
			last = append(last, i)
		}
		if c.d > 1 {
			last[0] = c.d - 1 // make sure one data shard is missing
		}
		patterns = append(patterns, last)

		for _, consistent := range []bool{true, false} {
			for _, pat := range patterns {
				in := make([][]byte, c.d+c.p)
				for i := range in {
					if consistent {
						in[i] = append([]byte(nil), shards[i]...)
					} else {
						in[i] = r.bytes(c.n)
					}
				}
				for _, e := range pat {
					in[e] = nil
				}
				given := fecHexAll(in)
				if err := enc.ReconstructData(in); err != nil {
					t.Fatalf("(%d,%d) %v: %v", c.d, c.p, pat, err)
				}
				rc.Reconstruct = append(rc.Reconstruct, fecRSReconstruct{
					Shards: given, Consistent: consistent, Data: fecHexAll(in[:c.d]),
				})
			}
		}
		cases = append(cases, rc)
	}
	return cases
}

// fecRunInPackage copies kcp-go's package sources into a temp dir, adds our
// generator as a test file and returns the JSON it writes.
func fecRunInPackage(t *testing.T) map[string]json.RawMessage {
	tmp := fecInPackageCopy(t)
	outPath := filepath.Join(tmp, "fec_vectors.json")
	fecGoTest(t, tmp, "^TestFecVectorGen$", "FEC_VECTOR_OUT="+outPath)
	js, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var parts map[string]json.RawMessage
	if err := json.Unmarshal(js, &parts); err != nil {
		t.Fatal(err)
	}
	return parts
}

// fecGoTest runs `go test -run pattern` in the in-package copy.
func fecGoTest(t *testing.T, dir, pattern string, env ...string) []byte {
	cmd := exec.Command("go", "test", "-count=1", "-v", "-run", pattern, ".")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in-package generator failed: %v\n%s", err, out)
	}
	return out
}

// TestFecGoSpeed prints kcp-go's FEC timings for the comparison with
// `FEC_MIN_BATCH=1 cargo bench --bench fec` (run with FEC_MIN_BATCH=1).
func TestFecGoSpeed(t *testing.T) {
	if os.Getenv("FEC_MIN_BATCH") == "" {
		t.Skip("set FEC_MIN_BATCH=1 to time kcp-go's FEC")
	}
	out := fecGoTest(t, fecInPackageCopy(t), "^TestFecGoMinBatch$")
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "min-batch") {
			t.Log(line)
		}
	}
}

// fecInPackageCopy makes the temporary copy of kcp-go plus our test file.
func fecInPackageCopy(t *testing.T) string {
	version, _ := fecBuild(t)
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	// The module path has no upper-case letters, so no cache escaping.
	src := filepath.Join(strings.TrimSpace(string(cache)), fecKcpGoModule+"@"+version)
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("kcp-go %s is not in the module cache (go mod download): %v", version, err)
	}
	tmp := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		// Only the package's own sources: kcp-go's tests are left out (one of
		// them starts an HTTP server on 0.0.0.0:6060 in init()).
		keep := name == "go.mod" || name == "go.sum" ||
			(strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"))
		if e.IsDir() || !keep {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "fec_gen_test.go"), []byte(fecInPackageGenerator), 0o644); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// fecFile is the layout of every tests/vectors/fec_*.json file.
type fecFile struct {
	Source string `json:"source"`
	// Builds ("kcp-go vX, reedsolomon vY") whose generator output is exactly
	// these cases.
	BuiltWith []string        `json:"built_with"`
	Cases     json.RawMessage `json:"cases"`
}

func fecMarshal(t *testing.T, f fecFile) []byte {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func fecReadFile(path string) (*fecFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f fecFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &f, nil
}

func TestFecVectors(t *testing.T) {
	kcpVersion, rsVersion := fecBuild(t)
	build := "kcp-go " + kcpVersion + ", reedsolomon " + rsVersion
	t.Logf("build: %s", build)
	rs, err := json.Marshal(fecRSVectors(t))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]fecFile{"fec_rs": {
		Source: "github.com/klauspost/reedsolomon (the version kcp-go pins), reedsolomon.New(d, p), Encode and ReconstructData",
		Cases:  rs,
	}}
	parts := fecRunInPackage(t)
	for _, p := range []struct{ file, key, what string }{
		{"fec_encoder", "encoder", "fecEncoder.encode (newFECEncoder(d, p, 0)); output[i] = data packet then parity packets; now_ms: logical clock (pauses are real 600 ms sleeps)"},
		{"fec_decoder", "decoder", "fecDecoder.decode (newFECDecoder(d, p)) plus the session's r[2:size] filter; stats = DefaultSnmp after the case"},
		{"fec_autotune", "autotune", "autoTune.Sample then [FindPeriod(true), FindPeriod(false)] after every sample"},
		{"fec_oob", "oob", "fecEncoder.encodeOOB on [8 bytes room | conv | payload], interleaved with data packets"},
	} {
		raw, ok := parts[p.key]
		if !ok {
			t.Fatalf("generator output lacks %q", p.key)
		}
		files[p.file] = fecFile{Source: "github.com/xtaci/kcp-go/v5 " + p.what, Cases: raw}
	}

	update := os.Getenv("UPDATE_VECTORS") == "1"
	for name, ours := range files {
		shared := filepath.Join(fecVectorDir, name+".json")
		own := filepath.Join(fecVectorDir, name+"."+kcpVersion+".json")
		if update {
			fecUpdate(t, shared, own, build, ours)
			continue
		}
		path := own
		committed, err := fecReadFile(own)
		if os.IsNotExist(err) {
			path = shared
			committed, err = fecReadFile(shared)
		}
		if err != nil {
			t.Errorf("%v (run with UPDATE_VECTORS=1 to create it)", err)
			continue
		}
		if !slices.Contains(committed.BuiltWith, build) {
			t.Errorf("%s was not generated with %s (built_with %q); run with UPDATE_VECTORS=1 after checking why", path, build, committed.BuiltWith)
			continue
		}
		want := fecMarshal(t, fecFile{ours.Source, committed.BuiltWith, ours.Cases})
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what %s produces now (run with UPDATE_VECTORS=1 after checking why)", path, build)
		}
	}
}

// fecUpdate records this build's output: in the shared file when that is
// absent or holds exactly the same cases (adding the build to built_with),
// else in the version's own file (and the build leaves the shared list).
func fecUpdate(t *testing.T, shared, own, build string, ours fecFile) {
	write := func(path string, f fecFile) {
		slices.Sort(f.BuiltWith)
		f.BuiltWith = slices.Compact(f.BuiltWith)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, fecMarshal(t, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	same := func(a, b json.RawMessage) bool {
		var x, y bytes.Buffer
		return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
	}
	cur, err := fecReadFile(shared)
	switch {
	case os.IsNotExist(err):
		write(shared, fecFile{ours.Source, []string{build}, ours.Cases})
	case err != nil:
		t.Fatal(err)
	case same(cur.Cases, ours.Cases) && cur.Source == ours.Source:
		write(shared, fecFile{ours.Source, append(cur.BuiltWith, build), ours.Cases})
		if err := os.Remove(own); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	default:
		write(own, fecFile{ours.Source, []string{build}, ours.Cases})
		rest := slices.DeleteFunc(slices.Clone(cur.BuiltWith), func(b string) bool { return b == build })
		if len(rest) != len(cur.BuiltWith) {
			write(shared, fecFile{cur.Source, rest, cur.Cases})
		}
	}
}
