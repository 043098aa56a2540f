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
//! 6. CORS: preflights answered, answers and refusals readable by listed origins — [`cors`]; on
//!    MCP endpoints: the OAuth protected resource metadata, CORS preflights and the `Origin`
//!    check, before any token is asked for — [`mcp::edge`]
//! 7. audit availability, under `audit.on_failure = "fail_closed"` — [`audit`]
//! 8. request-head checks: size, framing, target form — [`head_limit`]
//! 9. request-body deadline, and the drain of a small body a refusal left unread —
//!    [`body_deadline`]
//! 10. per-IP flood guard — [`rate_limit::per_ip`]
//! 11. JWT or API-key authentication, verified-token cache, audience binding on MCP endpoints —
//!     [`auth`]
//! 12. per-user sliding-window rate limit (MCP endpoints are counted at 18) — [`rate_limit`]
//! 13. token budget on OpenAI-compatible routes — [`llm::budget`]
//! 14. input validation: size, media type, JSON, text length, injection rules; the JSON-RPC
//!     envelope on MCP endpoints — [`validate`], [`jsonrpc`]
//! 15. data-loss prevention on the body, and on the answer as it streams back — [`dlp`]
//! 16. the OpenAI-compatible policy (model, output tokens) and usage metering — [`llm`]
//! 17. the MCP policy: header/body agreement, session binding, tool rules and pins, filtered
//!     tool listings — [`mcp`]
//! 18. the rate limit's count of MCP calls (`tools/call`, `resources/read`, `prompts/get`) —
//!     [`rate_limit`]
//! 19. WebSocket handshakes forwarded and their sockets relayed with bounds; other upgrades
//!     refused — [`websocket`]
//! 20. forwarding with streaming, timeouts and sanitised upstream errors — [`proxy`], over
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
pub mod cors;
pub mod detect;
pub(crate) mod dev;
pub mod dlp;
pub mod error;
pub mod fault;
pub(crate) mod file_stamp;
pub mod head_limit;
pub mod headers;
pub mod init;
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
pub mod websocket;
