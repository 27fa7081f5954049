//! kcptun's layers above a session: [`smux`] stream multiplexing and
//! [`comp`] Snappy framing. They run over any byte stream.

pub mod comp;
pub mod smux;
