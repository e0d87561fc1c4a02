//! The Lambda API (rest-json: method, date-prefixed path and JSON bodies), one module per
//! resource family, and function URLs, which serve HTTP for functions directly.

pub(crate) mod aliases;
pub(crate) mod code_location;
pub(crate) mod event_invoke;
pub(crate) mod event_stream;
pub(crate) mod function_url;
pub(crate) mod functions;
pub(crate) mod invoke;
pub(crate) mod permissions;
pub(crate) mod provisioned;
pub(crate) mod render;
pub(crate) mod settings;
pub(crate) mod urls;
