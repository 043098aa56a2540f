mod abuse;
mod admin;
mod audit;
mod auth;
mod binary;
mod config;
mod errors;
mod fuzz_regressions;
mod llm;
#[cfg(feature = "otlp")]
mod otlp;
mod proxy;
mod rate_limit;
mod reload;
mod server;
mod slow_clients;
mod trace;
mod validation;
