//! The classifier hook: text the rules did not decide, judged by a prompt-injection model.
//!
//! Guards against injections phrased in ways no rule foresees: each text a scanned role wrote
//! (cut into windows of `max_chars`) is sent to a text-classification server in the shape that
//! Hugging Face's Text Embeddings Inference serves sequence classifiers (`POST /predict` with
//! `{"inputs": "...", "truncate": true}`, answering `[{"label": "INJECTION", "score": 0.98}, ...]`;
//! the nested `[[...]]` form of the Inference API is read too). The score is the highest score
//! of the labels in `labels`; at or above `threshold` the text is flagged. Windows of one request
//! are judged concurrently under one deadline (`timeout`); verdicts are cached by the SHA-256 of
//! the window, so repeated system prompts and RAG templates cost one call. A failure (no answer
//! in time, an error status, an unreadable answer) follows `failure_mode`: `closed` refuses with
//! 503, `open` forwards and records it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::validation::{ClassifierSettings, FailureMode};
use crate::metrics::Metrics;

/// Windows of one request judged at once.
pub const CONCURRENCY: usize = 8;
/// Largest classifier answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Texts shorter than this (in characters) are not sent: identifiers and single words.
pub const MIN_CHARS: usize = 12;

/// The classifier's judgement of a request's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every window scored below the threshold.
    Clean,
    /// A window scored at or above it.
    Flagged,
    /// The classifier could not judge every window.
    Unavailable,
}

/// The hook: an HTTP client, the settings and the verdict cache.
pub struct Classifier {
    settings: ClassifierSettings,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    cache: quick_cache::sync::Cache<[u8; 32], f32>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

/// One label and its score in the answer.
#[derive(Debug, Deserialize)]
struct Score {
    label: String,
    score: f64,
}

/// The answer: a list of scores, or the Inference API's list of lists.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Answer {
    Flat(Vec<Score>),
    Nested(Vec<Vec<Score>>),
}

impl Classifier {
    /// The hook for `settings`, with the system's trust roots for an `https` URL.
    pub fn new(settings: ClassifierSettings, metrics: Arc<Metrics>) -> Result<Classifier, String> {
        let tls = crate::tls::upstream_client_config(&[])?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Classifier {
            cache: quick_cache::sync::Cache::new(settings.cache_entries.max(1)),
            client: Client::builder(TokioExecutor::new()).build(connector),
            settings,
            metrics,
        })
    }

    /// How a failure is handled.
    pub fn failure_mode(&self) -> FailureMode {
        self.settings.failure_mode
    }

    /// Whether `text` would be sent at all.
    pub fn wants(text: &str) -> bool {
        text.chars().nth(MIN_CHARS - 1).is_some()
    }

    /// Judges `texts`, window by window, concurrently, stopping at the first flagged window.
    pub async fn judge(&self, texts: &[String]) -> Verdict {
        let mut all = Vec::new();
        for text in texts {
            if Self::wants(text) {
                all.extend(windows(text, self.settings.max_chars));
            }
        }
        let judged = tokio::time::timeout(self.settings.timeout, async {
            let mut pending = FuturesUnordered::new();
            let mut windows = all.into_iter();
            let mut failed = false;
            loop {
                while pending.len() < CONCURRENCY {
                    let Some(window) = windows.next() else { break };
                    pending.push(self.score(window));
                }
                let Some(score) = pending.next().await else {
                    break;
                };
                match score {
                    Some(score) if score >= self.settings.threshold => return Verdict::Flagged,
                    Some(_) => {}
                    None => failed = true,
                }
            }
            if failed {
                Verdict::Unavailable
            } else {
                Verdict::Clean
            }
        })
        .await;
        judged.unwrap_or_else(|_| {
            self.metrics.classifier_call("timeout");
            Verdict::Unavailable
        })
    }

    /// The score of one window, from the cache or the server; `None` when the server failed.
    async fn score(&self, window: &str) -> Option<f64> {
        let key: [u8; 32] = Sha256::digest(window.as_bytes()).into();
        if let Some(score) = self.cache.get(&key) {
            self.metrics.classifier_call("cached");
            return Some(f64::from(score));
        }
        let score = self.ask(window).await;
        match score {
            Some(score) => {
                self.metrics
                    .classifier_call(if score >= self.settings.threshold {
                        "flagged"
                    } else {
                        "clean"
                    });
                // Scores are probabilities: f32 keeps them to well past any threshold's precision.
                #[allow(clippy::cast_possible_truncation)]
                self.cache.insert(key, score as f32);
            }
            None => self.metrics.classifier_call("error"),
        }
        score
    }

    async fn ask(&self, window: &str) -> Option<f64> {
        let body =
            serde_json::to_vec(&serde_json::json!({"inputs": window, "truncate": true})).ok()?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.settings.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = self.client.request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let scores = match serde_json::from_slice::<Answer>(&bytes).ok()? {
            Answer::Flat(scores) => scores,
            Answer::Nested(mut lists) if lists.len() == 1 => lists.pop()?,
            Answer::Nested(_) => return None,
        };
        if scores.is_empty() || scores.iter().any(|s| !(0.0..=1.0).contains(&s.score)) {
            return None;
        }
        Some(
            scores
                .iter()
                .filter(|s| {
                    self.settings
                        .labels
                        .iter()
                        .any(|l| l.eq_ignore_ascii_case(&s.label))
                })
                .map(|s| s.score)
                .fold(0.0, f64::max),
        )
    }
}

/// `text` cut into windows of at most `max_chars` characters, on character boundaries.
fn windows(text: &str, max_chars: usize) -> impl Iterator<Item = &str> {
    let max_chars = max_chars.max(1);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(i, _)| i);
        let (window, tail) = rest.split_at(end);
        rest = tail;
        Some(window)
    })
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    fn windows_cover_the_text_on_character_boundaries() {
        let text = "ab\u{e9}cd\u{1F600}e";
        let parts: Vec<&str> = windows(text, 2).collect();
        assert_eq!(parts, ["ab", "\u{e9}c", "d\u{1F600}", "e"]);
        assert_eq!(parts.concat(), text);
        assert_eq!(windows("", 4).count(), 0);
    }
}
