//! Validation of `[dlp]` into [`DlpSettings`].

use super::raw::RawDlp;
use super::{ConfigError, Locator};

/// What a finding in a request body does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    /// 400 `secret_detected`; nothing forwarded.
    Block,
    /// The value is replaced by `[REDACTED:<rule>]` in the forwarded body.
    Redact,
    /// Forwarded unchanged; recorded.
    Shadow,
}

/// What a finding in a response does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Replaced by `[REDACTED:<rule>]`.
    Redact,
    /// Relayed unchanged; recorded.
    Shadow,
}

/// Validated `[dlp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpSettings {
    /// What a secret in a request body does.
    pub request_action: RequestAction,
    /// What a finding in a response does.
    pub response_action: ResponseAction,
    /// Whether the personal-data detectors run (the secret detectors always do).
    pub pii: bool,
    /// Canary strings: their appearance in a response means a system prompt leaked.
    pub canaries: Vec<String>,
}

/// Shortest canary accepted: a shorter one would match ordinary text.
pub const MIN_CANARY_CHARS: usize = 8;

pub(super) fn validate(raw: &RawDlp, at: &Locator<'_>) -> Result<DlpSettings, ConfigError> {
    let request_action = match raw.request_action.as_deref() {
        None | Some("block") => RequestAction::Block,
        Some("redact") => RequestAction::Redact,
        Some("shadow") => RequestAction::Shadow,
        Some(_) => {
            return Err(at.error(
                "dlp.request_action",
                "must be \"block\", \"redact\" or \"shadow\"",
            ));
        }
    };
    let response_action = match raw.response_action.as_deref() {
        None | Some("redact") => ResponseAction::Redact,
        Some("shadow") => ResponseAction::Shadow,
        Some(_) => {
            return Err(at.error("dlp.response_action", "must be \"redact\" or \"shadow\""));
        }
    };
    let mut pii = false;
    for detector in raw.detectors.as_deref().unwrap_or(&[]) {
        match detector.as_str() {
            "secrets" => {}
            "pii" => pii = true,
            _ => return Err(at.error("dlp.detectors", "lists \"secrets\" and \"pii\" only")),
        }
    }
    let canaries = match &raw.canaries_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                at.error(
                    "dlp.canaries_file",
                    format!("cannot read {path} ({})", e.kind()),
                )
            })?;
            let canaries: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            if canaries
                .iter()
                .any(|c| c.chars().count() < MIN_CANARY_CHARS)
            {
                return Err(at.error(
                    "dlp.canaries_file",
                    format!("every canary needs at least {MIN_CANARY_CHARS} characters"),
                ));
            }
            canaries
        }
    };
    Ok(DlpSettings {
        request_action,
        response_action,
        pii,
        canaries,
    })
}
