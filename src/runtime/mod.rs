//! Runtime shells: glue that runs the pure core (`proto`) on a runtime.
//! They own tasks, wakers, timers and the transport; every rule they apply
//! comes from [`Connection`](crate::connection::Connection) or the endpoint.
//!
//! - [`session`] and [`listener`]: tokio (`Session::dial`, `Listener::listen`).
//! - [`blocking`]: std threads and sockets, no async runtime.

pub mod blocking;
pub mod listener;
pub mod session;
