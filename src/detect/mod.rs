//! Detection: the text normalisation and the injection rules that judge request text.
//!
//! Guards against content the agent must not receive, hidden or not: [`normalize`] undoes the
//! encodings attackers layer over a payload (percent, HTML entities, Unicode escapes, confusable
//! forms), and [`rules`] matches the normalised text against the rule set in one pass. Config
//! builds the rule set at start-up; the validation stage runs it on every string of a body.

mod builtin;
mod literals;
pub mod mention;
pub mod normalize;
pub mod rules;
mod trigger;
