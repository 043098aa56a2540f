mod admin;
mod binary;
mod config;
mod errors;
mod proxy;
mod server;
