//! kcptun's layers above a session: [`smux`] stream multiplexing and
//! [`comp`] Snappy framing, plus kcptun's per-stream [`qpp`] Quantum
//! Permutation Pad. They run over any byte stream.

pub mod comp;
pub mod qpp;
pub mod smux;
