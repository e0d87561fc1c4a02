//! Lamina's domain: what a function, a version, an alias and a resource policy are, the limits
//! Lambda enforces on them, and the ARNs that name them.
//!
//! Architecture invariant: this crate does no I/O. It knows nothing of HTTP, SQL or Linux; the
//! layers above translate their inputs into these types and these errors into their outputs.
#![forbid(unsafe_code)]

pub mod arn;
pub mod concurrency;
pub mod error;
pub mod event_invoke;
pub mod function;
pub mod invoke;
pub mod policy;
pub mod session;
pub mod time;
pub mod url;
pub mod validate;

pub use error::{Error, ErrorKind, Result, ThrottleReason};
