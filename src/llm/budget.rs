//! Token budgets: tokens (input + output) per user per window, in memory or shared through Redis.
//!
//! Guards against cost abuse, which is about tokens, not requests: one request can cost a
//! thousand times another. A user whose budget for the current window is spent is refused (429
//! `budget_exceeded`, `Retry-After` = the end of the window) before anything reaches the
//! upstream; each answer's tokens are charged when it ends. Windows are fixed: they start at
//! multiples of the window length since the Unix epoch (a `1d` budget resets at 00:00 UTC), on
//! each replica's clock. The last request before the budget runs out is admitted whole, so a
//! user can overshoot by one answer's tokens; `max_output_tokens` bounds that overshoot.
//!
//! With the Redis backend of `[rate_limit]` the counts are shared by every replica and follow
//! its `failure_mode`: `closed` refuses (503) while Redis is unreachable, `open` and `local`
//! admit and count in memory meanwhile.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use crate::config::llm::{BudgetSettings, TokenBudget};
use crate::config::{FailureMode, RateLimitBackend};
use crate::error::GatewayError;
use crate::principal::Principal;
use crate::rate_limit::redis::RedisStore;

/// Prefix of every budget key in Redis.
pub const KEY_PREFIX: &str = "portcullis:budget:";

/// The token budgets of every user.
pub struct Budgets {
    default: TokenBudget,
    classes: Vec<(String, String, TokenBudget)>,
    local: DashMap<(usize, Arc<str>), (u64, u64)>,
    shared: Option<(RedisStore, FailureMode)>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// Whose budget a request spends: the user and their budget class.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user (or the client address without authentication).
    pub user: Arc<str>,
    /// Index of the budget class (0: the default).
    pub class: usize,
}

impl Budgets {
    /// The budgets of `[llm.budget]`, kept where `[rate_limit]` keeps its counts.
    pub fn new(settings: &BudgetSettings, backend: &RateLimitBackend) -> Result<Budgets, String> {
        let shared = match backend {
            RateLimitBackend::Memory => None,
            RateLimitBackend::Redis {
                url,
                topology,
                timeout,
                failure_mode,
            } => Some((RedisStore::new(url, topology, *timeout)?, *failure_mode)),
        };
        Ok(Budgets {
            default: settings.default,
            classes: settings
                .overrides
                .iter()
                .map(|o| (o.claim.clone(), o.value.clone(), o.budget))
                .collect(),
            local: DashMap::new(),
            shared,
        })
    }

    /// The account of a request from `principal` (or from `fallback`, the client address).
    pub fn account(
        &self,
        principal: Option<&Principal>,
        fallback: impl FnOnce() -> Arc<str>,
    ) -> Account {
        let Some(principal) = principal else {
            return Account {
                user: fallback(),
                class: 0,
            };
        };
        let class = self
            .classes
            .iter()
            .position(|(claim, value, _)| {
                principal
                    .claims
                    .iter()
                    .any(|(k, v)| k == claim && v == value)
            })
            .map_or(0, |i| i + 1);
        Account {
            user: principal.user.clone(),
            class,
        }
    }

    fn budget(&self, class: usize) -> TokenBudget {
        match class.checked_sub(1) {
            None => self.default,
            Some(i) => self.classes.get(i).map_or(self.default, |c| c.2),
        }
    }

    /// Whether the account may spend; else the seconds until its window ends.
    pub async fn check(&self, account: &Account) -> Result<(), GatewayError> {
        let budget = self.budget(account.class);
        let (window, retry_after) = window_now(budget.window);
        let spent = match &self.shared {
            None => self.local_spent(account, window),
            Some((store, mode)) => match store.budget_spent(&key(account, window)).await {
                Ok(spent) => spent,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis is unreachable; the token budget falls back");
                    if *mode == FailureMode::Closed {
                        return Err(GatewayError::LimiterUnavailable);
                    }
                    self.local_spent(account, window)
                }
            },
        };
        if spent >= budget.tokens {
            return Err(GatewayError::BudgetExceeded { retry_after });
        }
        Ok(())
    }

    /// Whether the check needs no round trip (the in-memory store).
    pub fn is_local(&self) -> bool {
        self.shared.is_none()
    }

    /// The in-memory check (the only store, or Redis's fallback).
    pub fn check_local(&self, account: &Account) -> Result<(), GatewayError> {
        let budget = self.budget(account.class);
        let (window, retry_after) = window_now(budget.window);
        if self.local_spent(account, window) >= budget.tokens {
            return Err(GatewayError::BudgetExceeded { retry_after });
        }
        Ok(())
    }

    fn local_spent(&self, account: &Account, window: u64) -> u64 {
        self.local
            .get(&(account.class, account.user.clone()))
            .map_or(0, |entry| if entry.0 == window { entry.1 } else { 0 })
    }

    /// Charges `tokens` to the account's current window.
    pub async fn charge(&self, account: &Account, tokens: u64) {
        let budget = self.budget(account.class);
        let (window, _) = window_now(budget.window);
        if let Some((store, _)) = &self.shared {
            let ttl = budget.window + Duration::from_secs(60);
            match store
                .budget_charge(&key(account, window), tokens, ttl)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis is unreachable; tokens are counted in memory");
                }
            }
        }
        self.charge_local(account, window, tokens);
    }

    /// Charges `tokens` in memory (the in-memory store needs no wait).
    pub fn charge_in_memory(&self, account: &Account, tokens: u64) {
        let (window, _) = window_now(self.budget(account.class).window);
        self.charge_local(account, window, tokens);
    }

    fn charge_local(&self, account: &Account, window: u64, tokens: u64) {
        let mut entry = self
            .local
            .entry((account.class, account.user.clone()))
            .or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(tokens);
    }

    /// Forgets accounts whose window has passed; called periodically.
    pub fn prune(&self) {
        self.local.retain(|(class, _), (window, _)| {
            let (now, _) = window_now(self.budget(*class).window);
            *window == now
        });
    }
}

/// The index of the current window and the seconds until it ends (at least 1).
fn window_now(window: Duration) -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let length = window.as_secs().max(1);
    (now / length, (length - now % length).max(1))
}

fn key(account: &Account, window: u64) -> String {
    format!("{KEY_PREFIX}{}:{}:{}", account.class, window, account.user)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Account, Budgets};
    use crate::config::RateLimitBackend;
    use crate::config::llm::{BudgetSettings, TokenBudget};
    use crate::error::GatewayError;

    #[tokio::test]
    async fn a_budget_admits_until_spent_and_users_are_separate() {
        let budgets = Budgets::new(
            &BudgetSettings {
                default: TokenBudget {
                    tokens: 100,
                    window: Duration::from_secs(3600),
                },
                overrides: Vec::new(),
            },
            &RateLimitBackend::Memory,
        )
        .unwrap();
        let alice = Account {
            user: Arc::from("alice"),
            class: 0,
        };
        let bob = Account {
            user: Arc::from("bob"),
            class: 0,
        };
        budgets.check(&alice).await.unwrap();
        budgets.charge(&alice, 60).await;
        budgets.check(&alice).await.unwrap();
        budgets.charge(&alice, 40).await;
        let refused = budgets.check(&alice).await;
        assert!(
            matches!(refused, Err(GatewayError::BudgetExceeded { retry_after }) if (1..=3600).contains(&retry_after))
        );
        budgets.check(&bob).await.unwrap();
        budgets.prune();
        assert!(budgets.check_local(&alice).is_err(), "pruned a live window");
    }
}
