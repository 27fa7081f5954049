//! UDP batch I/O (work in progress).
