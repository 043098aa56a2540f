mod abuse;
mod admin;
mod audit;
mod auth;
mod binary;
mod config;
mod errors;
#[cfg(feature = "otlp")]
mod otlp;
mod proxy;
mod rate_limit;
mod reload;
mod server;
mod trace;
mod validation;
