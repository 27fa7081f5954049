//! listener (work in progress).
