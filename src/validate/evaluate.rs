//! `portcullis check-rules`: the injection rules measured on a labelled corpus.
//!
//! Guards against leaving shadow mode blind: an operator runs the rules of their config over
//! their own traffic, labelled, and sees per category and role how much is caught and how much
//! honest text would be refused, before switching rules from `log` to `block`. Every item goes
//! through the same path a request does: it is placed in an OpenAI chat body in its role and
//! judged by the role-aware check, so roles the config does not scan are not flagged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::llm::{Role, Roles};
use crate::detect::rules::RuleSet;
use crate::validate::body::{BodyProblem, Judge, check_json_view};

/// The roles an item without a `role` is judged in.
pub const DEFAULT_EVALUATION_ROLES: [&str; 2] = ["user", "tool"];

/// One labelled line of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// `malicious` or `benign`.
    pub label: String,
    /// The item's category, reported separately.
    #[serde(default)]
    pub category: Option<String>,
    /// The role to judge the text in; both `user` and `tool` when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// The text.
    pub text: String,
}

/// Whether an item should be flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Should be flagged: the rate is detection.
    Malicious,
    /// Should pass: the rate is false positives.
    Benign,
}

/// The counts of one (category, label, role).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Items judged.
    pub items: usize,
    /// Items a rule matched (blocking or logging).
    pub flagged: usize,
}

impl Tally {
    /// Flagged items as a percentage of the items.
    pub fn rate(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            100.0 * self.flagged as f64 / self.items as f64
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The category.
    pub category: String,
    /// The label.
    pub label: Label,
    /// The role the texts were sent in.
    pub role: String,
    /// Its counts.
    #[serde(flatten)]
    pub tally: Tally,
}

/// An item judged wrongly: a missed malicious one, or a flagged benign one.
#[derive(Debug, Clone, Serialize)]
pub struct Mistake {
    /// Line number in the file.
    pub line: usize,
    /// The category.
    pub category: String,
    /// The role.
    pub role: String,
    /// The rule that flagged a benign item; none for a miss.
    pub rule: Option<String>,
    /// The start of the text.
    pub text: String,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Per (category, label, role).
    pub rows: Vec<Row>,
    /// Totals per (label, role).
    pub totals: Vec<Row>,
    /// How often each rule flagged malicious and benign items.
    pub rules: BTreeMap<String, Tally>,
    /// Items judged wrongly, in file order.
    pub mistakes: Vec<Mistake>,
}

/// Characters of a text shown for a mistake.
const SHOWN_CHARS: usize = 100;

/// What made a line unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusError {
    /// Line number.
    pub line: usize,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Judges every item of a JSONL `corpus` (lines that are not items, such as a `{"header": ...}`
/// line or blank lines, are skipped) with `rules`, scanning the roles in `scanned`.
pub fn evaluate(corpus: &str, rules: &RuleSet, scanned: Roles) -> Result<Report, CorpusError> {
    let mut counts: BTreeMap<(String, Label, String), Tally> = BTreeMap::new();
    let mut report = Report::default();
    for (index, line) in corpus.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| CorpusError {
            line: number,
            message: format!("not JSON (column {})", e.column()),
        })?;
        if value.get("text").is_none() && value.get("label").is_none() {
            continue;
        }
        let item: Item = serde_json::from_value(value).map_err(|e| CorpusError {
            line: number,
            message: format!("not an item: {e}"),
        })?;
        let label = match item.label.as_str() {
            "malicious" => Label::Malicious,
            "benign" => Label::Benign,
            other => {
                return Err(CorpusError {
                    line: number,
                    message: format!("label {other:?} is neither \"malicious\" nor \"benign\""),
                });
            }
        };
        let roles: Vec<&str> = match item.role.as_deref() {
            Some(role) if Role::from_name(role).is_some() => vec![role],
            Some(role) => {
                return Err(CorpusError {
                    line: number,
                    message: format!("role {role:?} is not a chat role"),
                });
            }
            None => DEFAULT_EVALUATION_ROLES.to_vec(),
        };
        let category = item.category.clone().unwrap_or_else(|| "-".to_owned());
        for role in roles {
            let flagged = judge(&item.text, role, rules, scanned);
            let tally = counts
                .entry((category.clone(), label, role.to_owned()))
                .or_default();
            tally.items += 1;
            tally.flagged += usize::from(flagged.is_some());
            if let Some(rule) = &flagged {
                let per_rule = report.rules.entry(rule.clone()).or_default();
                per_rule.items += 1;
                per_rule.flagged += usize::from(label == Label::Benign);
            }
            if flagged.is_some() != (label == Label::Malicious) {
                report.mistakes.push(Mistake {
                    line: number,
                    category: category.clone(),
                    role: role.to_owned(),
                    rule: flagged,
                    text: shown(&item.text),
                });
            }
        }
    }
    let mut totals: BTreeMap<(Label, String), Tally> = BTreeMap::new();
    for ((category, label, role), tally) in counts {
        let total = totals.entry((label, role.clone())).or_default();
        total.items += tally.items;
        total.flagged += tally.flagged;
        report.rows.push(Row {
            category,
            label,
            role,
            tally,
        });
    }
    report
        .rows
        .sort_by(|a, b| (a.label, &a.category, &a.role).cmp(&(b.label, &b.category, &b.role)));
    report.totals = totals
        .into_iter()
        .map(|((label, role), tally)| Row {
            category: "all".to_owned(),
            label,
            role,
            tally,
        })
        .collect();
    Ok(report)
}

/// The rule that flags `text` sent in `role`, judged as a request is: in a chat body, through the
/// role-aware check. Logging rules count, as the operator measuring shadow mode wants them to.
fn judge(text: &str, role: &str, rules: &RuleSet, scanned: Roles) -> Option<String> {
    let body = serde_json::json!({
        "model": "check-rules",
        "messages": [{"role": role, "content": text}],
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    match check_json_view(&bytes, rules, usize::MAX, usize::MAX, Judge::Roles(scanned)) {
        Ok((findings, _)) => findings.logged.map(|rule| rule.id),
        Err(BodyProblem::Injection(rule)) => Some(rule.id),
        Err(_) => None,
    }
}

fn shown(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Which mistakes the text report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Show {
    /// None: the tables only.
    #[default]
    Nothing,
    /// Benign items flagged.
    FalsePositives,
    /// Malicious items missed.
    Misses,
    /// Both.
    All,
}

impl Report {
    /// The report as text tables.
    pub fn render(&self, show: Show) -> String {
        let mut out = String::new();
        let width = self
            .rows
            .iter()
            .map(|r| r.category.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:<9}  {:>6}  {:>7}  {:>6}",
            "category", "label", "role", "items", "flagged", "rate"
        );
        for row in self.rows.iter().chain(&self.totals) {
            let meaning = match row.label {
                Label::Malicious => "detected",
                Label::Benign => "false positives",
            };
            let label = match row.label {
                Label::Malicious => "malicious",
                Label::Benign => "benign",
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<9}  {:<9}  {:>6}  {:>7}  {:>5.1}%  {meaning}",
                row.category,
                label,
                row.role,
                row.tally.items,
                row.tally.flagged,
                row.tally.rate(),
            );
        }
        if !self.rules.is_empty() {
            let _ = writeln!(out, "\nrule matches (of which on benign items):");
            for (rule, tally) in &self.rules {
                let _ = writeln!(out, "  {rule}: {} ({})", tally.items, tally.flagged);
            }
        }
        for mistake in &self.mistakes {
            let wanted = matches!(
                (&mistake.rule, show),
                (_, Show::All) | (Some(_), Show::FalsePositives) | (None, Show::Misses)
            );
            if wanted {
                let what = match &mistake.rule {
                    Some(rule) => format!("false positive ({rule})"),
                    None => "missed".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "line {} [{} / {}] {what}: {}",
                    mistake.line, mistake.category, mistake.role, mistake.text
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::llm::DEFAULT_SCAN_ROLES;
    use crate::detect::rules::RuleOptions;

    #[test]
    fn rates_per_category_and_role() {
        let rules = RuleSet::new(&RuleOptions::default()).unwrap();
        let corpus = concat!(
            "{\"header\": {\"about\": \"test\"}}\n",
            "{\"label\":\"malicious\",\"category\":\"xss\",\"text\":\"<script>alert(1)</script>\"}\n",
            "{\"label\":\"malicious\",\"category\":\"xss\",\"text\":\"hello there\"}\n",
            "{\"label\":\"benign\",\"category\":\"chat\",\"role\":\"user\",\"text\":\"hello\"}\n",
            "{\"label\":\"benign\",\"category\":\"chat\",\"role\":\"system\",\"text\":\"<script>alert(1)</script>\"}\n",
        );
        let report = evaluate(corpus, &rules, Roles::of(&DEFAULT_SCAN_ROLES)).unwrap();
        let row = |category: &str, role: &str| {
            report
                .rows
                .iter()
                .find(|r| r.category == category && r.role == role)
                .map(|r| r.tally.clone())
        };
        assert_eq!(
            row("xss", "user"),
            Some(Tally {
                items: 2,
                flagged: 1
            })
        );
        assert_eq!(
            row("xss", "tool"),
            Some(Tally {
                items: 2,
                flagged: 1
            })
        );
        assert_eq!(
            row("chat", "user"),
            Some(Tally {
                items: 1,
                flagged: 0
            })
        );
        // The system role is not scanned by default: not flagged, as a request would not be.
        assert_eq!(
            row("chat", "system"),
            Some(Tally {
                items: 1,
                flagged: 0
            })
        );
        assert_eq!(report.mistakes.len(), 2);
        assert!(
            report
                .render(Show::Misses)
                .contains("line 3 [xss / user] missed")
        );
        let bad = evaluate(
            "{\"label\":\"evil\",\"text\":\"x\"}",
            &rules,
            Roles::of(&[]),
        );
        assert_eq!(bad.unwrap_err().line, 1);
    }
}
