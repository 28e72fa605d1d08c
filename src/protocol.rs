//! The Postgres wire protocol, on pgwire: connection handling with limits,
//! startup, simple and extended query, COPY, cancel. Turns
//! [`crate::sql::Output`] into protocol responses and [`crate::Error`] into
//! `ErrorResponse`s.

mod connection;
mod encode;
mod handler;
pub mod timezone;
pub mod types;

pub use connection::{serve_connection, ConnectionLimits};
pub use handler::Handler;

/// The PostgreSQL version EddyDB reports; drivers gate features on it.
pub use crate::query::pg_catalog::SERVER_VERSION;
pub const SERVER_VERSION_NUM: &str = "150000";
/// The one database.
pub const DATABASE: &str = "eddy";
