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
//
// Besides Go's wall-clock MB/s, each reports cpuMB/s: bytes over the CPU time
// of the (locked) benchmark thread, which is what benches/crypt.rs measures
// too — on shared machines wall-clock figures swing too much to compare.

import (
	"encoding/binary"
	"hash/crc32"
	"runtime"
	"testing"

	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/sys/unix"
)

// cryptThreadCPU returns the calling thread's CPU time in nanoseconds.
func cryptThreadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}

// cryptCPULoop runs op under b.Loop on a locked OS thread and reports
// bytesPerOp over the thread's CPU time as cpuMB/s.
func cryptCPULoop(b *testing.B, bytesPerOp int, op func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n := 0
	start := cryptThreadCPU(b)
	for b.Loop() {
		op()
		n++
	}
	cpu := cryptThreadCPU(b) - start
	if cpu > 0 {
		b.ReportMetric(float64(bytesPerOp)*float64(n)/float64(cpu)*1e3, "cpuMB/s")
	}
}

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
				cryptCPULoop(b, 1400, func() {
					entropy.Read(buf[:ns])
					d := a.Seal(buf[:ns], buf[:ns], buf[ns:ns+plen], nil)
					if _, err := a.Open(d[ns:ns], d[:ns], d[ns:], nil); err != nil {
						b.Fatal(err)
					}
				})
				return
			}
			d := buf[:1400]
			cryptCPULoop(b, 1400, func() {
				entropy.Read(d[:cryptNonceSize])
				binary.LittleEndian.PutUint32(d[cryptNonceSize:], crc32.ChecksumIEEE(d[cryptHeaderSize:]))
				bc.Encrypt(d, d)
				bc.Decrypt(d, d)
				if crc32.ChecksumIEEE(d[cryptHeaderSize:]) != binary.LittleEndian.Uint32(d[cryptNonceSize:]) {
					b.Fatal("checksum")
				}
			})
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
			cryptCPULoop(b, 3000, func() {
				bc.Encrypt(enc, data)
				bc.Decrypt(dec, enc)
			})
		})
	}
}
