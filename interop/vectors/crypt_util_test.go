package vectors

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/crypto/pbkdf2"
)

// cryptVectorDir is where the committed vectors live, relative to this package.
const cryptVectorDir = "../../tests/vectors"

// cryptUpdate reports whether the committed vector files should be rewritten.
func cryptUpdate() bool { return os.Getenv("UPDATE_VECTORS") == "1" }

// cryptMarshal renders v as the canonical committed JSON text.
func cryptMarshal(t *testing.T, v any) []byte {
	t.Helper()
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return append(out, '\n')
}

// cryptCheckOrWrite compares the freshly generated vectors with the committed
// file (failing on any difference), or rewrites it when UPDATE_VECTORS=1.
//
// Files whose content differs between kcp-go versions are kept once per
// version family (cryptVersionedFiles); the file for the kcp-go version in
// this build is compared or written, never another version's.
func cryptCheckOrWrite(t *testing.T, name string, v any) {
	t.Helper()
	name = cryptVersionedName(name)
	path := filepath.Join(cryptVectorDir, name)
	fresh := cryptMarshal(t, v)
	if cryptUpdate() {
		if err := os.WriteFile(path, fresh, 0o644); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		t.Logf("wrote %s (%d bytes)", path, len(fresh))
		return
	}
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (run with UPDATE_VECTORS=1 to create it)", path, err)
	}
	if !bytes.Equal(committed, fresh) {
		t.Fatalf("%s differs from what kcp-go generates now; inspect, then run with UPDATE_VECTORS=1", path)
	}
}

// cryptInput is the deterministic plaintext used by every vector:
// byte i = (i*37 + 11) mod 256, offset by seed.
func cryptInput(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*37+11) + seed
	}
	return b
}

// cryptKcptunKey is kcptun's PBKDF2-HMAC-SHA1(pass, "kcp-go", 4096, 32).
func cryptKcptunKey(pass string) []byte {
	return pbkdf2.Key([]byte(pass), []byte("kcp-go"), 4096, 32, sha1.New)
}

// cryptKcptunBlock mirrors kcptun's --crypt switch (spec §7.2), except that an
// unknown name is an error here instead of a silent AES-256 fallback.
// A nil BlockCrypt (name "null") means no crypto header at all.
func cryptKcptunBlock(name string, pass []byte) (kcp.BlockCrypt, []byte, error) {
	var key []byte
	var block kcp.BlockCrypt
	var err error
	switch name {
	case "null":
		return nil, nil, nil
	case "none":
		key = pass
		block, err = kcp.NewNoneBlockCrypt(key)
	case "aes":
		key = pass
		block, err = kcp.NewAESBlockCrypt(key)
	case "aes-128":
		key = pass[:16]
		block, err = kcp.NewAESBlockCrypt(key)
	case "aes-192":
		key = pass[:24]
		block, err = kcp.NewAESBlockCrypt(key)
	case "aes-128-gcm":
		key = pass[:16]
		block, err = kcp.NewAESGCMCrypt(key)
	case "salsa20":
		key = pass
		block, err = kcp.NewSalsa20BlockCrypt(key)
	case "blowfish":
		key = pass
		block, err = kcp.NewBlowfishBlockCrypt(key)
	case "twofish":
		key = pass
		block, err = kcp.NewTwofishBlockCrypt(key)
	case "cast5":
		key = pass[:16]
		block, err = kcp.NewCast5BlockCrypt(key)
	case "3des":
		key = pass[:24]
		block, err = kcp.NewTripleDESBlockCrypt(key)
	case "tea":
		key = pass[:16]
		block, err = kcp.NewTEABlockCrypt(key)
	case "xtea":
		key = pass[:16]
		block, err = kcp.NewXTEABlockCrypt(key)
	case "sm4":
		key = pass[:16]
		block, err = kcp.NewSM4BlockCrypt(key)
	case "xor":
		key = pass
		block, err = kcp.NewSimpleXORBlockCrypt(key)
	default:
		return nil, nil, fmt.Errorf("unknown cipher %q", name)
	}
	return block, key, err
}

// cryptAEAD is the exported method set of kcp-go's (unexported) AEAD crypt.
type cryptAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
	Overhead() int
}

// cryptVersionedFiles lists the vector files that kcp-go versions generate
// differently, and for which version families a separate file exists. All
// other files must regenerate byte-identically under every modfile.
//
//   - crypt_raw.json, kcptun_keys.json: kcp-go v5.7 derives a 1472-byte XOR
//     pad (maxPacketSize) where v5.6 derives 1500 bytes, so the XOR of a
//     1500-byte buffer and the 1500-byte pad vector differ from byte 1472 on
//     (unreachable on the wire: v5.7 never sends more than 1472 bytes).
//   - crypt_raw.json: kcp-go v5.6.64's Salsa20 panics on buffers shorter
//     than its 8-byte nonce and its "none" cipher on an empty buffer
//     (v5.6.72 leaves them untouched); those vectors are absent from its
//     file, the rest is identical (never on the wire: a datagram carries a
//     16-byte nonce).
var cryptVersionedFiles = map[string][]string{
	"crypt_raw.json":   {"v5.6.64", "v5.7"},
	"kcptun_keys.json": {"v5.7"},
}

// cryptVersionedName is name, or its per-version variant
// (crypt_raw.json -> crypt_raw.kcpgo-v5.7.json) when this build's kcp-go
// belongs to a family listed in cryptVersionedFiles.
func cryptVersionedName(name string) string {
	v := cryptKcpGoVersion()
	for _, fam := range cryptVersionedFiles[name] {
		if v == fam || strings.HasPrefix(v, fam+".") {
			return strings.TrimSuffix(name, ".json") + ".kcpgo-" + fam + ".json"
		}
	}
	return name
}

// cryptKcpGoVersion is the version of kcp-go compiled into this test binary
// (v5.6.72, v5.6.64, v5.7.6, ...), from the build info when it lists
// modules, else from the module path in the source file name of a kcp-go
// function (.../kcp-go/v5@v5.7.6/crypt.go).
func cryptKcpGoVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/xtaci/kcp-go/v5" {
				if m.Replace != nil {
					return m.Replace.Version
				}
				return m.Version
			}
		}
	}
	file, _ := runtime.FuncForPC(reflect.ValueOf(kcp.NewAESBlockCrypt).Pointer()).FileLine(0)
	if _, after, ok := strings.Cut(filepath.ToSlash(file), "/kcp-go/v5@"); ok {
		if v, _, ok := strings.Cut(after, "/"); ok {
			return v
		}
	}
	return "unknown"
}

// cryptTry runs f and reports whether it panicked (kcp-go v5.6.64's Salsa20
// on short buffers).
func cryptTry(f func()) (panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	f()
	return false
}
