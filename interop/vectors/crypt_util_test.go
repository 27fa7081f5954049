package vectors

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
func cryptCheckOrWrite(t *testing.T, name string, v any) {
	t.Helper()
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
