//! Deterministic simulated link for tests (work in progress).
