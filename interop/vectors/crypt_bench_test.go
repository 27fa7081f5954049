package vectors

// Go side of benches/crypt.rs, using kcp-go's exported API only:
//
//	go test ./vectors/ -run XXX -bench Crypt -benchtime 1s
//
// BenchmarkCryptDatagram: one op = what sess.go does for one 1400-byte
// datagram on each side — nonce from kcp-go's entropy source, CRC32,
// Encrypt (postProcess), then Decrypt and CRC check (packetInput); AEAD
// uses Seal/Open. SetBytes(1400).
// BenchmarkCryptRaw: kcp-go's own benchCrypt shape, Encrypt + Decrypt of
// 1500 bytes, SetBytes(3000).

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	kcp "github.com/xtaci/kcp-go/v5"
)

type cryptBenchCase struct {
	name string
	new  func([]byte) (kcp.BlockCrypt, error)
	key  int
}

var cryptBenchCases = []cryptBenchCase{
	{"AES128", kcp.NewAESBlockCrypt, 16},
	{"AES192", kcp.NewAESBlockCrypt, 24},
	{"AES256", kcp.NewAESBlockCrypt, 32},
	{"Salsa20", kcp.NewSalsa20BlockCrypt, 32},
	{"Blowfish", kcp.NewBlowfishBlockCrypt, 32},
	{"Cast5", kcp.NewCast5BlockCrypt, 16},
	{"TripleDES", kcp.NewTripleDESBlockCrypt, 24},
	{"TEA", kcp.NewTEABlockCrypt, 16},
	{"XTEA", kcp.NewXTEABlockCrypt, 16},
	{"Twofish", kcp.NewTwofishBlockCrypt, 32},
	{"SM4", kcp.NewSM4BlockCrypt, 16},
	{"XOR", kcp.NewSimpleXORBlockCrypt, 32},
	{"None", kcp.NewNoneBlockCrypt, 32},
	{"AESGCM", kcp.NewAESGCMCrypt, 16},
}

func BenchmarkCryptDatagram(b *testing.B) {
	pass := cryptKcptunKey("it's a secrect")
	entropy := kcp.NewEntropy()
	for _, c := range cryptBenchCases {
		bc, err := c.new(pass[:c.key])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 1500)
			for i := range buf {
				buf[i] = byte(i*37 + 11)
			}
			b.ReportAllocs()
			b.SetBytes(1400)
			if a, ok := bc.(cryptAEAD); ok {
				ns := a.NonceSize()
				plen := 1400 - ns - a.Overhead()
				for b.Loop() {
					entropy.Read(buf[:ns])
					d := a.Seal(buf[:ns], buf[:ns], buf[ns:ns+plen], nil)
					if _, err := a.Open(d[ns:ns], d[:ns], d[ns:], nil); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			d := buf[:1400]
			for b.Loop() {
				entropy.Read(d[:cryptNonceSize])
				binary.LittleEndian.PutUint32(d[cryptNonceSize:], crc32.ChecksumIEEE(d[cryptHeaderSize:]))
				bc.Encrypt(d, d)
				bc.Decrypt(d, d)
				if crc32.ChecksumIEEE(d[cryptHeaderSize:]) != binary.LittleEndian.Uint32(d[cryptNonceSize:]) {
					b.Fatal("checksum")
				}
			}
		})
	}
}

func BenchmarkCryptRaw(b *testing.B) {
	pass := cryptKcptunKey("it's a secrect")
	for _, c := range cryptBenchCases {
		if c.name == "AESGCM" {
			continue
		}
		bc, err := c.new(pass[:c.key])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			data := make([]byte, 1500)
			for i := range data {
				data[i] = byte(i*37 + 11)
			}
			enc := make([]byte, 1500)
			dec := make([]byte, 1500)
			b.ReportAllocs()
			b.SetBytes(3000)
			for b.Loop() {
				bc.Encrypt(enc, data)
				bc.Decrypt(dec, enc)
			}
		})
	}
}
