//! The HTTP endpoint: the server loop, `/metrics` (the text exposition) and the JSON API, all
//! read from the snapshot the poller publishes.

pub mod api;
pub mod metrics;
pub mod server;
pub mod web_config;
