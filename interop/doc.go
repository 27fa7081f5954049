// Package interop proves kcp-session's wire compatibility against real kcp-go:
// it regenerates the byte-level vectors under ../tests/vectors and runs live
// sessions between the Rust crate and kcp-go in both directions.
package interop
