//! The pure core: everything that decides, as deterministic code with no
//! I/O, no clocks and no tasks (bytes and time in; bytes, deadlines and
//! events out).
//!
//! Layers, bottom up: [`crypt`] (datagram ciphers and the CRC), [`fec`]
//! (Reed-Solomon shards), [`kcp`] (the ARQ engine), `codec` (one datagram
//! through crypt, FEC and KCP, both directions), [`connection`] (one
//! session's rules) and the endpoint (a listener's demultiplexing rules).
//! The runtime shells in `runtime` and the transports in
//! [`transport`](crate::transport) are glue around these.

#[cfg(feature = "testing")]
pub mod codec;
#[cfg(not(feature = "testing"))]
pub(crate) mod codec;
pub mod connection;
pub mod crypt;
pub(crate) mod endpoint;
pub mod fec;
pub mod kcp;
pub(crate) mod packet;
pub mod rate;
