package peer

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"fmt"

	kcp "github.com/xtaci/kcp-go/v5"
)

// DefaultKey is kcptun's default passphrase (the typo is kcptun's).
const DefaultKey = "it's a secrect"

// CipherNames lists every --crypt name the peer accepts: kcptun's names
// (docs/wire.md §7.2) plus aes-192-gcm and aes-256-gcm as extensions.
var CipherNames = []string{
	"null", "none", "aes", "aes-128", "aes-192", "aes-128-gcm", "aes-192-gcm", "aes-256-gcm",
	"salsa20", "blowfish", "twofish", "cast5", "3des", "tea", "xtea", "sm4", "xor",
}

// KcptunKey derives kcptun's 32-byte key from a passphrase (docs/wire.md §7.2).
func KcptunKey(passphrase string) ([]byte, error) {
	return pbkdf2.Key(sha1.New, passphrase, []byte("kcp-go"), 4096, 32)
}

// NewBlockCrypt builds the kcp-go cipher for a kcptun crypt name. "null"
// returns nil (no crypto header at all). Unlike kcptun, an unknown name is an
// error instead of a silent fallback to AES, so a typo in the harness cannot
// turn into a passing cell.
func NewBlockCrypt(name, passphrase string) (kcp.BlockCrypt, error) {
	pass, err := KcptunKey(passphrase)
	if err != nil {
		return nil, err
	}
	switch name {
	case "null":
		return nil, nil
	case "none":
		return kcp.NewNoneBlockCrypt(pass)
	case "aes", "aes-256":
		return kcp.NewAESBlockCrypt(pass)
	case "aes-128":
		return kcp.NewAESBlockCrypt(pass[:16])
	case "aes-192":
		return kcp.NewAESBlockCrypt(pass[:24])
	case "aes-128-gcm":
		return kcp.NewAESGCMCrypt(pass[:16])
	case "aes-192-gcm":
		return kcp.NewAESGCMCrypt(pass[:24])
	case "aes-256-gcm":
		return kcp.NewAESGCMCrypt(pass)
	case "salsa20":
		return kcp.NewSalsa20BlockCrypt(pass)
	case "blowfish":
		return kcp.NewBlowfishBlockCrypt(pass)
	case "twofish":
		return kcp.NewTwofishBlockCrypt(pass)
	case "cast5":
		return kcp.NewCast5BlockCrypt(pass[:16])
	case "3des":
		return kcp.NewTripleDESBlockCrypt(pass[:24])
	case "tea":
		return kcp.NewTEABlockCrypt(pass[:16])
	case "xtea":
		return kcp.NewXTEABlockCrypt(pass[:16])
	case "sm4":
		return kcp.NewSM4BlockCrypt(pass[:16])
	case "xor":
		return kcp.NewSimpleXORBlockCrypt(pass)
	}
	return nil, fmt.Errorf("unknown --crypt %q", name)
}
