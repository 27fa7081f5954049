// Command gopeer is the Go (kcp-go) peer of the interop harness; see
// interop/README.md for its command line.
package main

import (
	"os"

	"kcpsession/interop/peer"
)

func main() {
	os.Exit(peer.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
