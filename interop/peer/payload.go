package peer

import "encoding/binary"

// Payload is the deterministic pseudo-random byte stream every role sends or
// expects. It is part of the peer CLI contract (README.md) so the Rust peer can
// produce the very same bytes: SplitMix64 seeded with --seed, each 64-bit
// output emitted as 8 little-endian bytes, the stream truncated to --bytes.
// Writes of any chunk size concatenate to the same stream.
type Payload struct {
	state uint64
	buf   [8]byte
	avail int // unread bytes left at the end of buf
}

// NewPayload returns the stream for seed, positioned at byte 0.
func NewPayload(seed uint64) *Payload { return &Payload{state: seed} }

func (p *Payload) next() uint64 {
	p.state += 0x9e3779b97f4a7c15
	z := p.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Fill writes the next len(b) bytes of the stream into b.
func (p *Payload) Fill(b []byte) {
	for len(b) > 0 {
		// Whole words straight into b (same bytes, less per-byte work: the
		// benchmark driver counts the peers' CPU time).
		if p.avail == 0 && len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, p.next())
			b = b[8:]
			continue
		}
		if p.avail == 0 {
			binary.LittleEndian.PutUint64(p.buf[:], p.next())
			p.avail = 8
		}
		n := copy(b, p.buf[8-p.avail:])
		p.avail -= n
		b = b[n:]
	}
}

// Bytes returns the first n bytes of the stream for seed.
func Bytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	NewPayload(seed).Fill(b)
	return b
}
