//! Forward error correction (work in progress).
