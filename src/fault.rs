//! Fault markers: the error types that say whose fault a failed body was, and how to find them
//! through the wrapping of hyper and axum.
//!
//! Guards against blaming the wrong party: a request body that stopped arriving is the client's
//! fault (408 or 400), never the upstream's (502); a response stream cut for silence is recorded
//! as `upstream_idle_timeout`, not as an abort. A leaf of the module graph: the stages that cut a
//! body raise these, and the error renderer and the audit record recognise them.

/// A boxed error from a library, kept for the operational log only.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error that ends a request body that did not arrive within `server.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_timeout")]
pub struct BodyTimeout;

/// The error that ends a request body the client sent malformed or did not finish.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read")]
pub struct MalformedBody(#[source] pub axum::Error);

/// The error that ends a response stream whose upstream fell silent past `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for longer than upstream.idle_timeout")]
pub struct UpstreamIdleTimeout;

/// Whether `error` or one of its sources is an `E`: how the layers recognise a cause (an idle
/// upstream, a late or malformed request body) through the wrapping of hyper and axum.
pub fn caused_by<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Displays an error with all its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
