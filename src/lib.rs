//! portcullis: a security gateway in front of AI-agent backends.
//!
//! A request meets, in this order (assembled in [`pipeline::build`]):
//!
//! 1. TLS termination (rustls) and HTTP/1.1 or HTTP/2 by ALPN — [`server`]; on HTTP/1.1 the
//!    framing guard follows message boundaries on the raw bytes — [`server::framing`]
//! 2. request context: id, client address, trace context — [`context`]
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
//! Every stage is a `tower` layer ([`stage`]) assembled with `tower::ServiceBuilder` in
//! [`pipeline::build`]; the stages' futures are named types, so a request's trip through them is
//! one future. A stage refuses with a [`error::GatewayError`] value; every refusal is rendered in
//! one place, [`error::render`], in the dialect of the request's route. Health, readiness and
//! metrics live on a separate listener, [`admin`].
//!
//! The modules form layers, each importing only those below it (`.ci/module-cycles.py` keeps it
//! so): the shared vocabulary ([`outcome`], [`fault`], [`principal`], [`trace`]) at the bottom;
//! [`config`] and [`tls`] above it; the context, error and stages above them; the pipeline above
//! the stages; the server, admin and CLI on top.

#![forbid(unsafe_code)]

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod body_deadline;
pub mod cli;
pub mod config;
pub mod context;
pub mod detect;
pub(crate) mod dev;
pub mod dlp;
pub mod error;
pub mod fault;
pub(crate) mod file_stamp;
pub mod head_limit;
pub mod headers;
pub mod jsonrpc;
pub mod keys;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod principal;
pub mod proxy;
pub mod rate_limit;
pub mod revocation;
pub mod secret;
pub mod server;
pub mod stage;
pub(crate) mod tls;
pub mod trace;
pub mod validate;
