//! KCP ARQ engine (work in progress).

/// Whether a datagram arrived as sent or was rebuilt by FEC (kcp-go's
/// `IKCP_PACKET_REGULAR` / `IKCP_PACKET_FEC`). Recovered packets do not update
/// the remote window or RTT (spec §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Received from the network as sent.
    Regular,
    /// Rebuilt from FEC parity.
    Recovered,
}
