//! Packet security layer (work in progress).
