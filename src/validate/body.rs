//! The JSON walk: well-formedness, depth, text length and injection rules in one parse.
//!
//! Guards against bodies built to hurt the parser or the agent: the body is parsed once with a
//! visitor that builds no tree, stops at the first problem, limits nesting, counts the characters
//! of every string value and object key, and hands each one, normalised, to the rules.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::llm::Roles;
use crate::detect::normalize::{normalize, unleet};
use crate::detect::rules::{Action, Rule, RuleSet};
use crate::llm::request::judged_texts;
use crate::validate::classifier::Classifier;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    /// Not well-formed UTF-8 JSON, or nested deeper than allowed.
    InvalidJson(&'static str),
    /// More characters of text than `max_input_chars`.
    TooLong,
    /// A blocking rule matched.
    Injection(Rule),
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Findings {
    /// A logging (shadow-mode) rule that matched, if any.
    pub logged: Option<Rule>,
    /// When asked for: the judged string values no rule matched and long enough for the
    /// classifier hook ([`MIN_CHARS`](crate::validate::classifier::MIN_CHARS)), for it to judge.
    pub undecided: Vec<String>,
}

struct Walk<'r> {
    rules: &'r RuleSet,
    max_depth: usize,
    max_chars: usize,
    chars: usize,
    problem: Option<BodyProblem>,
    logged: Option<Rule>,
    undecided: Option<Vec<String>>,
}

impl Walk<'_> {
    /// Counts and scans one string (a value, or an object key); `Err` stops the walk.
    fn text(&mut self, text: &str, value: bool) -> Result<(), ()> {
        self.chars += text.chars().count();
        if self.chars > self.max_chars {
            self.problem = Some(BodyProblem::TooLong);
            return Err(());
        }
        match scan(self.rules, text) {
            Some(rule) if rule.action == Action::Block => {
                self.problem = Some(BodyProblem::Injection(rule.clone()));
                Err(())
            }
            Some(rule) => {
                if self.logged.is_none() {
                    self.logged = Some(rule.clone());
                }
                Ok(())
            }
            None => {
                if value
                    && let Some(undecided) = &mut self.undecided
                    && Classifier::wants(text)
                {
                    undecided.push(text.to_owned());
                }
                Ok(())
            }
        }
    }
}

/// Normalises `text` and returns the most severe matching rule, in the text as written or, when
/// it is written in leetspeak, as read back in letters.
pub fn scan<'r>(rules: &'r RuleSet, text: &str) -> Option<&'r Rule> {
    let normalized = normalize(text);
    if !normalized.settled {
        return Some(rules.layered_encoding());
    }
    rules.scan(&normalized.text).or_else(|| {
        let letters = unleet(&normalized.text)?;
        rules.scan(&letters)
    })
}

/// Validates a JSON body; on success returns the shadow-mode finding, if any.
pub fn check_json(
    body: &[u8],
    rules: &RuleSet,
    max_depth: usize,
    max_chars: usize,
) -> Result<Findings, BodyProblem> {
    check_json_collecting(body, rules, max_depth, max_chars, false)
}

/// [`check_json`], also returning the undecided string values when `collect` is set.
pub fn check_json_collecting(
    body: &[u8],
    rules: &RuleSet,
    max_depth: usize,
    max_chars: usize,
    collect: bool,
) -> Result<Findings, BodyProblem> {
    let mut walk = Walk {
        rules,
        max_depth,
        max_chars,
        chars: 0,
        problem: None,
        logged: None,
        undecided: collect.then(Vec::new),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Node {
        walk: &mut walk,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(problem) = walk.problem.take() {
        return Err(problem);
    }
    match parsed {
        Ok(()) => Ok(Findings {
            logged: walk.logged,
            undecided: walk.undecided.unwrap_or_default(),
        }),
        Err(e) if e.is_eof() => Err(BodyProblem::InvalidJson("truncated")),
        Err(_) => Err(BodyProblem::InvalidJson("malformed")),
    }
}

/// One JSON value at a depth.
struct Node<'w, 'r> {
    walk: &'w mut Walk<'r>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// One object key.
struct Key<'w, 'r> {
    walk: &'w mut Walk<'r>,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.walk.text(v, false).map_err(|()| E::custom("stop"))
    }
}

impl Node<'_, '_> {
    fn deeper<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > self.walk.max_depth {
            self.walk.problem = Some(BodyProblem::InvalidJson("too_deep"));
            return Err(E::custom("stop"));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.walk.text(v, true).map_err(|()| E::custom("stop"))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        while seq
            .next_element_seed(Node {
                walk: &mut *self.walk,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        while map
            .next_key_seed(Key {
                walk: &mut *self.walk,
            })?
            .is_some()
        {
            map.next_value_seed(Node {
                walk: &mut *self.walk,
                depth,
            })?;
        }
        Ok(())
    }
}

/// Which texts of a parsed body the injection rules judge.
#[derive(Debug, Clone, Copy)]
pub enum Judge {
    /// Every string value and key, as [`check_json`] does.
    Everything,
    /// The texts of an OpenAI-compatible request that these roles wrote ([`judged_texts`]).
    Roles(Roles),
}

/// Validates a JSON body and returns its parsed view (for the stages after validation that read
/// its fields): the same well-formedness, depth and length limits as [`check_json`] over every
/// string and key, with the injection rules judging the texts `judge` names.
pub fn check_json_view(
    body: &[u8],
    rules: &RuleSet,
    max_depth: usize,
    max_chars: usize,
    judge: Judge,
) -> Result<(Findings, serde_json::Value), BodyProblem> {
    check_json_view_collecting(body, rules, max_depth, max_chars, judge, false)
}

/// [`check_json_view`], also returning the undecided judged string values when `collect` is set.
pub fn check_json_view_collecting(
    body: &[u8],
    rules: &RuleSet,
    max_depth: usize,
    max_chars: usize,
    judge: Judge,
    collect: bool,
) -> Result<(Findings, serde_json::Value), BodyProblem> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        BodyProblem::InvalidJson(if e.is_eof() {
            "truncated"
        } else if e.to_string().starts_with("recursion limit exceeded") {
            "too_deep"
        } else {
            "malformed"
        })
    })?;
    let mut chars = 0;
    measure(&value, 0, max_depth, &mut chars)?;
    if chars > max_chars {
        return Err(BodyProblem::TooLong);
    }
    let mut logged: Option<Rule> = None;
    let mut blocked: Option<Rule> = None;
    let mut undecided = Vec::new();
    let mut judge_text = |text: &str, value: bool| {
        if blocked.is_some() {
            return;
        }
        match scan(rules, text) {
            Some(rule) if rule.action == Action::Block => blocked = Some(rule.clone()),
            Some(rule) if logged.is_none() => logged = Some(rule.clone()),
            Some(_) => {}
            None if collect && value && Classifier::wants(text) => {
                undecided.push(text.to_owned());
            }
            None => {}
        }
    };
    match judge {
        Judge::Roles(roles) => judged_texts(&value, roles, &mut |text| judge_text(text, true)),
        Judge::Everything => every_text(&value, &mut judge_text),
    }
    if let Some(rule) = blocked {
        return Err(BodyProblem::Injection(rule));
    }
    Ok((Findings { logged, undecided }, value))
}

/// Calls `f` with every string value (flagged `true`) and key (`false`) of `value`.
fn every_text(value: &serde_json::Value, f: &mut impl FnMut(&str, bool)) {
    use serde_json::Value;
    match value {
        Value::String(text) => f(text, true),
        Value::Array(items) => items.iter().for_each(|item| every_text(item, f)),
        Value::Object(fields) => {
            for (key, item) in fields {
                f(key, false);
                every_text(item, f);
            }
        }
        _ => {}
    }
}

/// Checks the nesting depth and adds up the characters of every string and key.
fn measure(
    value: &serde_json::Value,
    depth: usize,
    max_depth: usize,
    chars: &mut usize,
) -> Result<(), BodyProblem> {
    use serde_json::Value;
    match value {
        Value::String(text) => *chars += text.chars().count(),
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(BodyProblem::InvalidJson("too_deep"));
            }
            for item in items {
                measure(item, depth + 1, max_depth, chars)?;
            }
        }
        Value::Object(fields) => {
            if depth + 1 > max_depth {
                return Err(BodyProblem::InvalidJson("too_deep"));
            }
            for (key, item) in fields {
                *chars += key.chars().count();
                measure(item, depth + 1, max_depth, chars)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Scans the query string's keys and values the same way.
pub fn check_query<'r>(query: &str, rules: &'r RuleSet) -> Option<&'r Rule> {
    let mut logged = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        for text in [key, value] {
            match scan(rules, &text) {
                Some(rule) if rule.action == Action::Block => return Some(rule),
                Some(rule) => logged = logged.or(Some(rule)),
                None => {}
            }
        }
    }
    logged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::RuleOptions;

    fn check(body: &str, depth: usize, chars: usize) -> Result<Findings, BodyProblem> {
        let rules = RuleSet::new(&RuleOptions::default()).unwrap();
        check_json(body.as_bytes(), &rules, depth, chars)
    }

    #[test]
    fn depth_length_and_rules() {
        assert!(check(r#"{"a":[1,{"b":"c"}]}"#, 3, 100).is_ok());
        assert_eq!(
            check(r#"{"a":[1,{"b":"c"}]}"#, 2, 100).unwrap_err(),
            BodyProblem::InvalidJson("too_deep")
        );
        // Keys count too: "ab" + "cde" = 5 characters.
        assert!(check(r#"{"ab":"cde"}"#, 8, 5).is_ok());
        assert_eq!(
            check(r#"{"ab":"cdef"}"#, 8, 5).unwrap_err(),
            BodyProblem::TooLong
        );
        // Characters, not bytes.
        assert!(check(r#"{"k":"ééé"}"#, 8, 4).is_ok());
        assert!(matches!(
            check(r#"{"m":"\u003cscript\u003ealert(1)\u003c/script\u003e"}"#, 8, 1000),
            Err(BodyProblem::Injection(r)) if r.id == "xss.script_tag"
        ));
        assert!(matches!(
            check("{", 8, 10),
            Err(BodyProblem::InvalidJson(_))
        ));
        assert!(matches!(
            check("{} x", 8, 10),
            Err(BodyProblem::InvalidJson(_))
        ));
        assert!(matches!(check("", 8, 10), Err(BodyProblem::InvalidJson(_))));
    }
}
