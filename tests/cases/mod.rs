mod admin;
mod auth;
mod binary;
mod config;
mod errors;
mod proxy;
mod rate_limit;
mod server;
