//! Validation of `[validation]`, with the rule set compiled.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::raw::{RawClassifier, RawPattern, RawValidation};
use super::{ConfigError, Locator};
use crate::detect::rules::{Action, ExtraRule, Pattern, RuleOptions, RuleSet};

/// Default largest body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest accepted `max_body_bytes`.
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default budget of request-body bytes buffered at once: 64 bodies of the default size.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * DEFAULT_MAX_BODY_BYTES;
/// Largest accepted `max_buffered_bytes` (the budget is counted in 32-bit units per request).
pub const MAX_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024 * 1024;
/// Default most characters of text in a JSON body.
pub const DEFAULT_MAX_INPUT_CHARS: usize = 100_000;
/// Default deepest JSON nesting.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Deepest nesting the JSON parser itself allows.
pub const MAX_JSON_DEPTH: usize = 128;

/// Validated `[validation]`.
#[derive(Debug, Clone)]
pub struct ValidationSettings {
    /// Largest body accepted; larger is 413.
    pub max_body_bytes: usize,
    /// Most body bytes buffered at once across requests; a request that finds no room waits
    /// briefly, then gets 503.
    pub max_buffered_bytes: usize,
    /// Most characters (string values and keys) in a JSON body; more is 400.
    pub max_input_chars: usize,
    /// Deepest JSON nesting; deeper is 400.
    pub max_json_depth: usize,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// Extra media types accepted (lower case, without parameters).
    pub allowed_content_types: Vec<String>,
    /// The classifier hook, when configured.
    pub classifier: Option<ClassifierSettings>,
}

/// What the classifier does when it cannot judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Forward the request; the audit record says the classifier was unavailable.
    Open,
    /// Refuse with 503.
    Closed,
}

/// Validated `[validation.classifier]`.
#[derive(Debug, Clone)]
pub struct ClassifierSettings {
    /// The classification endpoint.
    pub url: Uri,
    /// Score at or above which a text is flagged.
    pub threshold: f64,
    /// Deadline for all of one request's windows.
    pub timeout: Duration,
    /// What a failure does.
    pub failure_mode: FailureMode,
    /// Characters per window sent.
    pub max_chars: usize,
    /// Verdicts kept.
    pub cache_entries: usize,
    /// Labels whose score counts (upper case).
    pub labels: Vec<String>,
}

/// Default score at or above which the classifier flags a text.
pub const DEFAULT_CLASSIFIER_THRESHOLD: f64 = 0.9;
/// Default deadline for one request's classification.
pub const DEFAULT_CLASSIFIER_TIMEOUT: Duration = Duration::from_millis(500);
/// Default characters per classified window: about the 512-token input of the small
/// prompt-injection models.
pub const DEFAULT_CLASSIFIER_MAX_CHARS: usize = 1500;
/// Default verdicts cached.
pub const DEFAULT_CLASSIFIER_CACHE_ENTRIES: usize = 10_000;
/// Labels counted by default: those of ProtectAI's deberta-v3 prompt-injection models and Meta's
/// Prompt Guard.
pub const DEFAULT_CLASSIFIER_LABELS: [&str; 3] = ["INJECTION", "JAILBREAK", "MALICIOUS"];

fn classifier(raw: &RawClassifier, at: &Locator<'_>) -> Result<ClassifierSettings, ConfigError> {
    let key = |k: &str| format!("validation.classifier.{k}");
    let url: Uri = raw
        .url
        .parse()
        .ok()
        .filter(|u: &Uri| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        })
        .ok_or_else(|| at.error(&key("url"), "must be an http:// or https:// URL"))?;
    let threshold = raw.threshold.unwrap_or(DEFAULT_CLASSIFIER_THRESHOLD);
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(at.error(&key("threshold"), "must be above 0 and at most 1"));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_CLASSIFIER_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(at.error(
            &key("timeout"),
            "must be a duration between 1ms and 60s, e.g. \"500ms\"",
        ));
    }
    let failure_mode = match raw.failure_mode.as_deref() {
        None | Some("closed") => FailureMode::Closed,
        Some("open") => FailureMode::Open,
        Some(_) => return Err(at.error(&key("failure_mode"), "must be \"open\" or \"closed\"")),
    };
    let max_chars = match raw.max_chars {
        None => DEFAULT_CLASSIFIER_MAX_CHARS,
        Some(n) if (64..=100_000).contains(&n) => n as usize,
        Some(_) => return Err(at.error(&key("max_chars"), "must be between 64 and 100000")),
    };
    let cache_entries = match raw.cache_entries {
        None => DEFAULT_CLASSIFIER_CACHE_ENTRIES,
        Some(n) if n <= 10_000_000 => n as usize,
        Some(_) => return Err(at.error(&key("cache_entries"), "must be at most 10000000")),
    };
    let labels = match &raw.labels {
        None => DEFAULT_CLASSIFIER_LABELS.map(str::to_owned).to_vec(),
        Some(labels) if !labels.is_empty() && labels.iter().all(|l| !l.trim().is_empty()) => labels
            .iter()
            .map(|l| l.trim().to_ascii_uppercase())
            .collect(),
        Some(_) => return Err(at.error(&key("labels"), "must name at least one label")),
    };
    Ok(ClassifierSettings {
        url,
        threshold,
        timeout,
        failure_mode,
        max_chars,
        cache_entries,
        labels,
    })
}

fn action(text: &str, key: &str, at: &Locator<'_>) -> Result<Action, ConfigError> {
    match text {
        "block" => Ok(Action::Block),
        "log" => Ok(Action::Log),
        _ => Err(at.error(key, "must be \"block\" or \"log\"")),
    }
}

pub(super) fn validate(
    raw: &RawValidation,
    at: &Locator<'_>,
) -> Result<ValidationSettings, ConfigError> {
    let max_body_bytes = match raw.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_MAX_BODY_BYTES).contains(n))
            .ok_or_else(|| {
                at.error(
                    "validation.max_body_bytes",
                    "must be between 1 and 67108864",
                )
            })?,
    };
    let max_buffered_bytes = match raw.max_buffered_bytes {
        None => DEFAULT_MAX_BUFFERED_BYTES.max(max_body_bytes),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (max_body_bytes..=MAX_MAX_BUFFERED_BYTES).contains(n))
            .ok_or_else(|| {
                at.error(
                    "validation.max_buffered_bytes",
                    "must be at least max_body_bytes and at most 68719476736",
                )
            })?,
    };
    let max_input_chars = match raw.max_input_chars {
        None => DEFAULT_MAX_INPUT_CHARS,
        Some(0) => return Err(at.error("validation.max_input_chars", "must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let max_json_depth = match raw.max_json_depth {
        None => DEFAULT_MAX_JSON_DEPTH,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_JSON_DEPTH).contains(n))
            .ok_or_else(|| at.error("validation.max_json_depth", "must be between 1 and 128"))?,
    };
    let default_action = match raw.action.as_deref() {
        None => Action::Block,
        Some(text) => action(text, "validation.action", at)?,
    };
    let mut extra = Vec::with_capacity(raw.extra_patterns.len());
    let mut actions = Vec::new();
    for (i, pattern) in raw.extra_patterns.iter().enumerate() {
        match pattern {
            RawPattern::Text(text) if text.is_empty() => {
                return Err(at.error("validation.extra_patterns", "has an empty pattern"));
            }
            RawPattern::Text(text) => extra.push(ExtraRule {
                id: format!("custom.{}", i + 1),
                pattern: match text.strip_prefix("re:") {
                    Some(regex) => Pattern::Regex(regex.to_owned()),
                    None => Pattern::Literal(text.clone()),
                },
            }),
            RawPattern::Rule(rule) => {
                let pattern = match (&rule.literal, &rule.regex) {
                    (Some(l), None) if !l.is_empty() => Pattern::Literal(l.clone()),
                    (None, Some(r)) if !r.is_empty() => Pattern::Regex(r.clone()),
                    _ => {
                        return Err(at.error(
                            "validation.extra_patterns",
                            "each rule needs exactly one of literal or regex",
                        ));
                    }
                };
                if let Some(a) = &rule.action {
                    actions.push((rule.id.clone(), action(a, "validation.extra_patterns", at)?));
                }
                extra.push(ExtraRule {
                    id: rule.id.clone(),
                    pattern,
                });
            }
        }
    }
    for (id, text) in &raw.rule_actions {
        actions.push((id.clone(), action(text, "validation.rule_actions", at)?));
    }
    let rules = RuleSet::new(&RuleOptions {
        default_action: Some(default_action),
        actions,
        disabled: raw.disabled_rules.clone(),
        extra,
    })
    .map_err(|m| at.error("validation.extra_patterns", m))?;
    let allowed_content_types = raw
        .allowed_content_types
        .iter()
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let classifier = raw
        .classifier
        .as_ref()
        .map(|c| classifier(c, at))
        .transpose()?;
    Ok(ValidationSettings {
        classifier,
        max_body_bytes,
        max_buffered_bytes,
        max_input_chars,
        max_json_depth,
        rules: Arc::new(rules),
        allowed_content_types,
    })
}
