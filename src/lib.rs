//! portcullis: a security gateway in front of AI-agent backends.
//!
//! A request meets, in this order (assembled in [`pipeline::build`]):
//!
//! 1. TLS termination (rustls) and HTTP/1.1 or HTTP/2 by ALPN — [`server`]; on HTTP/1.1 the
//!    framing guard follows message boundaries on the raw bytes — [`server::framing`]
//! 2. request id and context — [`request_id`]
//! 3. audit record and metrics, completed when the response ends — [`audit`], [`metrics`]
//! 4. security headers on every response — [`headers`]
//! 5. panic containment — [`error`]
//! 6. audit availability, under `audit.on_failure = "fail_closed"` — [`audit`]
//! 7. request-head checks: size, framing, target form — [`head_limit`]
//! 8. request-body deadline, and the drain of a small body a refusal left unread —
//!    [`body_deadline`]
//! 9. per-IP flood guard — [`rate_limit::per_ip`]
//! 10. JWT authentication, verified-token cache — [`auth`]
//! 11. per-user sliding-window rate limit — [`rate_limit`]
//! 12. input validation: size, media type, JSON, text length, injection rules — [`validate`]
//! 13. forwarding with streaming, timeouts and sanitised upstream errors — [`proxy`], over
//!     pooled keep-alive upstream connections
//!
//! The stages are linked by type ([`stage`], the `chain!` in [`pipeline::build`]): a request's
//! trip through them is one future.
//! Every rejection is an RFC 9457 problem+json built in one place, [`error`]. Health, readiness
//! and metrics live on a separate listener, [`admin`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body_deadline;
pub mod cli;
pub mod config;
pub mod dev;
pub mod error;
pub mod file_stamp;
pub mod head_limit;
pub mod headers;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod proxy;
pub mod rate_limit;
pub mod request_id;
pub mod server;
pub mod stage;
pub mod trace;
pub mod validate;
