package vectors

// FEC vectors (docs/wire.md §11 items 6-9) for tests/fec_vectors.rs.
//
//	go test ./vectors/                    regenerate in memory, fail on any difference
//	UPDATE_VECTORS=1 go test ./vectors/   rewrite tests/vectors/fec_*.json
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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/reedsolomon"
	// Pins kcp-go in go.mod so `go list -m` finds the exact version.
	_ "github.com/xtaci/kcp-go/v5"
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

func fecRSVectors(t *testing.T) any {
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
	return struct {
		Source string      `json:"source"`
		Cases  []fecRSCase `json:"cases"`
	}{"github.com/klauspost/reedsolomon v1.12.0, reedsolomon.New(d, p), Encode and ReconstructData", cases}
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
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", fecKcpGoModule)
	list.Env = append(os.Environ(), "GOWORK=off")
	dirOut, err := list.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", fecKcpGoModule, err)
	}
	src := strings.TrimSpace(string(dirOut))
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

func TestFecVectors(t *testing.T) {
	files := map[string]any{"fec_rs.json": fecRSVectors(t)}
	parts := fecRunInPackage(t)
	for _, p := range []struct{ file, key, what string }{
		{"fec_encoder.json", "encoder", "fecEncoder.encode (newFECEncoder(d, p, 0)); output[i] = data packet then parity packets; now_ms: logical clock (pauses are real 600 ms sleeps)"},
		{"fec_decoder.json", "decoder", "fecDecoder.decode (newFECDecoder(d, p)) plus the session's r[2:size] filter; stats = DefaultSnmp after the case"},
		{"fec_autotune.json", "autotune", "autoTune.Sample then [FindPeriod(true), FindPeriod(false)] after every sample"},
		{"fec_oob.json", "oob", "fecEncoder.encodeOOB on [8 bytes room | conv | payload], interleaved with data packets"},
	} {
		raw, ok := parts[p.key]
		if !ok {
			t.Fatalf("generator output lacks %q", p.key)
		}
		files[p.file] = struct {
			Source string          `json:"source"`
			Cases  json.RawMessage `json:"cases"`
		}{"github.com/xtaci/kcp-go/v5 v5.6.72 " + p.what, raw}
	}

	update := os.Getenv("UPDATE_VECTORS") == "1"
	for name, v := range files {
		want, err := json.MarshalIndent(v, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		path := filepath.Join(fecVectorDir, name)
		if update {
			if err := os.MkdirAll(fecVectorDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run with UPDATE_VECTORS=1 to create it)", path, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what kcp-go produces now (run with UPDATE_VECTORS=1 after checking why)", path)
		}
	}
}
