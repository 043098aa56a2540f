//! Validation of `[llm]` into [`LlmSettings`].

use std::time::Duration;

use super::raw::RawLlm;
use super::{ConfigError, Locator};

/// The OpenAI-compatible paths when `[llm] paths` is not set.
pub const DEFAULT_LLM_PATHS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
];

/// The roles whose text the injection rules judge when `[llm] scan_roles` is not set.
pub const DEFAULT_SCAN_ROLES: [Role; 2] = [Role::User, Role::Tool];

/// Shortest accepted budget window.
pub const MIN_BUDGET_WINDOW: Duration = Duration::from_secs(1);

/// A message role in the OpenAI APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Text the end user wrote.
    User,
    /// A tool's result fed back to the model.
    Tool,
    /// The legacy name of a tool result.
    Function,
    /// The application's instructions.
    System,
    /// The application's instructions (newer models).
    Developer,
    /// What the model said earlier in the conversation.
    Assistant,
}

impl Role {
    /// The role named `name` in a request.
    pub fn from_name(name: &str) -> Option<Role> {
        Some(match name {
            "user" => Role::User,
            "tool" => Role::Tool,
            "function" => Role::Function,
            "system" => Role::System,
            "developer" => Role::Developer,
            "assistant" => Role::Assistant,
            _ => return None,
        })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// The set of `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |bits, r| bits | r.bit()))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
}

/// Validated `[llm]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmSettings {
    /// Paths handled as OpenAI-compatible routes (exact match, without the query).
    pub paths: Vec<String>,
    /// Roles whose text the injection rules judge.
    pub scan_roles: Roles,
    /// Models a request may name; empty: any.
    pub allowed_models: Vec<String>,
    /// Largest token limit a request may ask for; `None`: no cap.
    pub max_output_tokens: Option<u64>,
    /// The token budget, when configured.
    pub budget: Option<BudgetSettings>,
}

/// Validated `[llm.budget]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettings {
    /// The default budget.
    pub default: TokenBudget,
    /// Budgets for users with a claim value (first match wins).
    pub overrides: Vec<BudgetOverride>,
}

/// Tokens per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Tokens (input + output) a user may spend in one window.
    pub tokens: u64,
    /// The window: budgets reset at multiples of it since the Unix epoch.
    pub window: Duration,
}

/// `[[llm.budget.overrides]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetOverride {
    /// The claim.
    pub claim: String,
    /// Its value.
    pub value: String,
    /// The budget.
    pub budget: TokenBudget,
}

pub(super) fn validate(raw: &RawLlm, at: &Locator<'_>) -> Result<LlmSettings, ConfigError> {
    let paths = match &raw.paths {
        None => DEFAULT_LLM_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        Some(paths) => {
            if let Some(bad) = paths
                .iter()
                .find(|p| !p.starts_with('/') || p.contains('?'))
            {
                return Err(at.error(
                    "llm.paths",
                    format!("{bad:?} is not a path: paths start with / and have no query"),
                ));
            }
            paths.clone()
        }
    };
    let scan_roles = match &raw.scan_roles {
        None => Roles::of(&DEFAULT_SCAN_ROLES),
        Some(names) => {
            let mut roles = Vec::with_capacity(names.len());
            for name in names {
                roles.push(Role::from_name(name).ok_or_else(|| {
                    at.error(
                        "llm.scan_roles",
                        format!(
                            "{name:?} is not a role: use \"user\", \"tool\", \"function\", \
                             \"system\", \"developer\" or \"assistant\""
                        ),
                    )
                })?);
            }
            Roles::of(&roles)
        }
    };
    if raw.allowed_models.iter().any(String::is_empty) {
        return Err(at.error("llm.allowed_models", "a model name cannot be empty"));
    }
    let budget = match &raw.budget {
        None => None,
        Some(b) => {
            let budget = |tokens: u64, window: Duration, key: &str| {
                if tokens == 0 {
                    return Err(at.error(key, "must be at least 1"));
                }
                if window < MIN_BUDGET_WINDOW {
                    return Err(at.error(key, "window must be at least 1s"));
                }
                Ok(TokenBudget { tokens, window })
            };
            let default = budget(b.tokens, b.window, "llm.budget.tokens")?;
            let mut overrides = Vec::with_capacity(b.overrides.len());
            for (i, o) in b.overrides.iter().enumerate() {
                overrides.push(BudgetOverride {
                    claim: o.claim.clone(),
                    value: o.value.clone(),
                    budget: budget(
                        o.tokens,
                        o.window.unwrap_or(b.window),
                        &format!("llm.budget.overrides[{i}].tokens"),
                    )?,
                });
            }
            Some(BudgetSettings { default, overrides })
        }
    };
    Ok(LlmSettings {
        paths,
        scan_roles,
        allowed_models: raw.allowed_models.clone(),
        max_output_tokens: (raw.max_output_tokens > 0).then_some(raw.max_output_tokens),
        budget,
    })
}
