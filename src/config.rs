//! tmp
/// limit
pub const MTU_LIMIT: usize = 1500;
