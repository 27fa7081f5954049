package interop

import (
	"encoding/binary"
	"hash/crc32"
	"sync"
	"testing"

	"kcpsession/interop/peer"
)

// aeadOpener is what kcp-go's AEAD BlockCrypt offers beyond BlockCrypt.
type aeadOpener interface {
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
}

// CFB framing (docs/wire.md §2): a 16-byte nonce, then the CRC-32 (IEEE,
// little-endian) of everything after it, all encrypted.
const (
	cfbNonceSize = 16
	cfbCRCSize   = 4
)

// wireCheck is the relay's per-datagram opinion for a cell (relay.Config.Check):
// kcp-go's own cipher, keyed as the peers are, opens a copy of each datagram
// and verifies its CRC or AEAD tag. It shares no code with the Rust side, so
// a datagram the Rust peer seals wrongly is caught here even when the Go
// peer happens to accept it. nil for "null" (no header, nothing to check).
func wireCheck(cipher, key string) (func([]byte) bool, error) {
	bc, err := peer.NewBlockCrypt(cipher, key)
	if err != nil || bc == nil {
		return nil, err
	}
	// One cipher instance (some, e.g. tjfoc's SM4, keep scratch state) and one
	// scratch buffer, for the relay's several goroutines.
	var mu sync.Mutex
	scratch := make([]byte, 1<<16)
	return func(pkt []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if a, ok := bc.(aeadOpener); ok {
			n := a.NonceSize()
			if len(pkt) < n {
				return false
			}
			_, err := a.Open(scratch[:0], pkt[:n], pkt[n:], nil)
			return err == nil
		}
		if len(pkt) < cfbNonceSize+cfbCRCSize || len(pkt) > len(scratch) {
			return false
		}
		plain := scratch[:len(pkt)]
		bc.Decrypt(plain, pkt)
		return crc32.ChecksumIEEE(plain[cfbNonceSize+cfbCRCSize:]) == binary.LittleEndian.Uint32(plain[cfbNonceSize:])
	}, nil
}

// aeadSealer is kcp-go's AEAD sealing side, for TestWireCheck.
type aeadSealer interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	NonceSize() int
	Overhead() int
}

// wireCheck accepts what kcp-go seals and refuses it with any byte flipped,
// for every cipher the matrix uses.
func TestWireCheck(t *testing.T) {
	for _, name := range peer.CipherNames {
		check, err := wireCheck(name, "wire check key")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "null" {
			if check != nil {
				t.Errorf("null: a check although there is no header")
			}
			continue
		}
		bc, _ := peer.NewBlockCrypt(name, "wire check key")
		payload := peer.Bytes(uint64(len(name)), 300)
		var pkt []byte
		if a, ok := bc.(aeadSealer); ok {
			n := a.NonceSize()
			buf := make([]byte, n+len(payload), n+len(payload)+a.Overhead())
			copy(buf[n:], payload)
			pkt = a.Seal(buf[:n], buf[:n], buf[n:], nil)
		} else {
			pkt = make([]byte, cfbNonceSize+cfbCRCSize+len(payload))
			copy(pkt[cfbNonceSize+cfbCRCSize:], payload)
			binary.LittleEndian.PutUint32(pkt[cfbNonceSize:], crc32.ChecksumIEEE(payload))
			bc.Encrypt(pkt, pkt)
		}
		if !check(pkt) {
			t.Errorf("%s: a datagram kcp-go sealed fails the check", name)
			continue
		}
		// Every position the CRC or the tag covers: all of an AEAD datagram;
		// after the nonce for CFB (its nonce is random and unchecked, and with
		// an 8-byte block a flip there garbles only nonce bytes).
		from := cfbNonceSize
		if _, ok := bc.(aeadSealer); ok {
			from = 0
		}
		for i := from; i < len(pkt); i++ {
			bad := append([]byte(nil), pkt...)
			bad[i] ^= 0x20
			if check(bad) {
				t.Errorf("%s: byte %d flipped still passes", name, i)
				break
			}
		}
		if check(pkt[:len(pkt)-1]) {
			t.Errorf("%s: a truncated datagram passes", name)
		}
	}
}
