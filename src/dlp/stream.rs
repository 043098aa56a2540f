//! Redaction of text that arrives in pieces: one scanner per text channel (a body, or one
//! choice's `delta.content` in an OpenAI stream), holding back only what could still become a
//! match.
//!
//! Guards against a secret split across chunks or events slipping through, without buffering the
//! stream: each piece is appended to the channel's pending text, the detectors run over it, and
//! everything is released (redacted where it matched) except the *candidate tail*: the trailing
//! run of characters that a secret or personal-data value could continue (letters, digits and
//! the symbols keys use, and digit or capital groups joined by single spaces, as card numbers,
//! IBANs and phone numbers are written), or a match that reaches the end. The tail is at most
//! [`MAX_MATCH_BYTES`]; a private-key block in progress at most [`MAX_KEY_BLOCK_BYTES`], past
//! which the rest of the block is redacted as it comes. Nothing is released on a timer: the
//! tail waits for the next piece (in a token stream, the next token) or for the end of the
//! stream, when it is scanned as final text. A stream that falls silent is cut by the upstream's
//! `idle_timeout`, which ends it the same way; a timer that released the tail early is exactly
//! how a secret trickled out slowly would get through.

use super::detect::{Detectors, Finding, MAX_KEY_BLOCK_BYTES, MAX_MATCH_BYTES, replace};

const KEY_BEGIN: &str = "-----BEGIN ";
const KEY_BEGIN_TAIL: &str = "PRIVATE KEY-----";
const KEY_END: &str = "-----END ";

/// One text channel.
#[derive(Debug, Default)]
pub struct TextScanner {
    pending: String,
    /// The last released text (at most [`CONTEXT_BYTES`]), scanned again before the pending
    /// text so that a pattern keyed on the words before a value (`aws_secret_access_key = …`)
    /// still sees them; never released twice.
    context: String,
    /// Inside a private-key block longer than the hold: everything is dropped until its end.
    in_key_block: bool,
}

/// Released text kept as context for the next scan.
pub const CONTEXT_BYTES: usize = 64;

/// Where JSON strings are, for scanning raw JSON text: only findings inside a string are taken.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonState {
    in_string: bool,
    escaped: bool,
}

impl JsonState {
    /// The state after `text`, given the state at its start; with `ranges`, the ranges of
    /// `text` inside strings are pushed there. Jumps between quotes and backslashes (memchr)
    /// rather than looking at every byte.
    fn advance(mut self, text: &[u8], mut ranges: Option<&mut Vec<(usize, usize)>>) -> JsonState {
        let mut at = 0;
        let mut start = self.in_string.then_some(0);
        while at < text.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    at += 1;
                    continue;
                }
                let Some(found) = memchr::memchr2(b'"', b'\\', &text[at..]) else {
                    break;
                };
                at += found;
                if text[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if let (Some(s), Some(r)) = (start.take(), ranges.as_deref_mut()) {
                        r.push((s, at));
                    }
                }
                at += 1;
            } else {
                let Some(found) = memchr::memchr(b'"', &text[at..]) else {
                    break;
                };
                at += found + 1;
                self.in_string = true;
                start = Some(at);
            }
        }
        if let (Some(s), Some(r)) = (start, ranges) {
            r.push((s, text.len()));
        }
        self
    }
}

impl TextScanner {
    /// Adds `text` and returns what can be released now, redacted; findings go to `found`.
    pub fn push(
        &mut self,
        detectors: &Detectors,
        text: &str,
        found: &mut Vec<&'static str>,
    ) -> String {
        self.push_inner(detectors, text, found, None).0
    }

    /// Like [`push`](Self::push) for raw JSON text: only findings inside strings count.
    pub fn push_json(
        &mut self,
        detectors: &Detectors,
        text: &str,
        found: &mut Vec<&'static str>,
        state: &mut JsonState,
    ) -> String {
        let (released, next) = self.push_inner(detectors, text, found, Some(*state));
        if let Some(next) = next {
            *state = next;
        }
        released
    }

    fn push_inner(
        &mut self,
        detectors: &Detectors,
        text: &str,
        found: &mut Vec<&'static str>,
        json: Option<JsonState>,
    ) -> (String, Option<JsonState>) {
        let mut text = text;
        if self.in_key_block {
            match text.find(KEY_END) {
                None => return (String::new(), json),
                Some(at) => {
                    self.in_key_block = false;
                    let rest = &text[at..];
                    let after = rest
                        .find("-----\n")
                        .or_else(|| rest.rfind("-----"))
                        .map_or(rest.len(), |e| e + 5);
                    text = &rest[after.min(rest.len())..];
                }
            }
        }
        self.pending.push_str(text);
        let mut hold = candidate_tail(&self.pending);
        // A run that cannot grow into a match goes at once.
        let before_start = floor_char_boundary(&self.pending, hold.saturating_sub(CONTEXT_BYTES));
        let mut before = String::new();
        if hold < CONTEXT_BYTES {
            before.push_str(&self.context);
        }
        before.push_str(&self.pending[before_start..hold]);
        hold = match detectors.may_continue(&before, &self.pending[hold..]) {
            None => self.pending.len(),
            Some(offset) => hold + offset,
        };
        // A private-key block whose end has not arrived is held whole, up to its bound.
        if let Some(begin) = open_key_block(&self.pending) {
            if self.pending.len() - begin > MAX_KEY_BLOCK_BYTES {
                let (released, state) = self.release(detectors, begin, found, json);
                found.push("secret.private_key");
                self.pending.clear();
                self.in_key_block = true;
                return (released + "[REDACTED:secret.private_key]", state);
            }
            hold = hold.min(begin);
        }
        self.finish_push(detectors, hold, found, json)
    }

    fn finish_push(
        &mut self,
        detectors: &Detectors,
        hold: usize,
        found: &mut Vec<&'static str>,
        json: Option<JsonState>,
    ) -> (String, Option<JsonState>) {
        let findings = self.find(detectors, self.pending.len());
        // A match that reaches into the tail may go on: hold from its start.
        let hold = findings
            .iter()
            .filter(|f| f.end > hold)
            .map(|f| f.start)
            .fold(hold, usize::min);
        self.release_with(&findings, hold, found, json)
    }

    fn release(
        &mut self,
        detectors: &Detectors,
        upto: usize,
        found: &mut Vec<&'static str>,
        json: Option<JsonState>,
    ) -> (String, Option<JsonState>) {
        let upto = floor_char_boundary(&self.pending, upto);
        let findings = self.find(detectors, upto);
        self.release_with(&findings, upto, found, json)
    }

    /// The findings in the pending text up to `upto`, scanned after the context; positions are
    /// in the pending text (a match that began in the context starts at 0).
    fn find(&self, detectors: &Detectors, upto: usize) -> Vec<Finding> {
        let upto = floor_char_boundary(&self.pending, upto);
        let head = self.pending.get(..upto).unwrap_or_default();
        if self.context.is_empty() {
            return detectors.find(head);
        }
        let mut text = String::with_capacity(self.context.len() + head.len());
        text.push_str(&self.context);
        text.push_str(head);
        let skip = self.context.len();
        detectors
            .find(&text)
            .into_iter()
            .filter(|f| f.end > skip)
            .map(|f| Finding {
                rule: f.rule,
                start: f.start.saturating_sub(skip),
                end: f.end - skip,
            })
            .collect()
    }

    fn release_with(
        &mut self,
        findings: &[Finding],
        hold: usize,
        found: &mut Vec<&'static str>,
        json: Option<JsonState>,
    ) -> (String, Option<JsonState>) {
        let hold = floor_char_boundary(&self.pending, hold);
        let head = self.pending.get(..hold).unwrap_or_default();
        // String ranges are worked out only when something may need them.
        let any = findings.iter().any(|f| f.end <= hold);
        let (strings, next) = match json {
            Some(state) if any => {
                let mut ranges = Vec::new();
                let next = state.advance(head.as_bytes(), Some(&mut ranges));
                (Some(ranges), Some(next))
            }
            Some(state) => (None, Some(state.advance(head.as_bytes(), None))),
            None => (None, None),
        };
        let taken: Vec<Finding> = findings
            .iter()
            .filter(|f| f.end <= hold)
            .filter(|f| {
                strings
                    .as_ref()
                    .is_none_or(|ranges| ranges.iter().any(|(s, e)| *s <= f.start && f.end <= *e))
            })
            .copied()
            .collect();
        found.extend(taken.iter().map(|f| f.rule));
        let released = replace(head, &taken);
        if head.len() >= CONTEXT_BYTES {
            let from = floor_char_boundary(head, head.len() - CONTEXT_BYTES);
            self.context.clear();
            self.context.push_str(&head[from..]);
        } else {
            self.context.push_str(head);
            if self.context.len() > CONTEXT_BYTES {
                let cut = floor_char_boundary(&self.context, self.context.len() - CONTEXT_BYTES);
                self.context.drain(..cut);
            }
        }
        self.pending.drain(..hold);
        (released, next)
    }

    /// The end of the channel: everything pending, scanned as final text.
    pub fn finish(&mut self, detectors: &Detectors, found: &mut Vec<&'static str>) -> String {
        if self.in_key_block {
            self.pending.clear();
            return String::new();
        }
        let end = self.pending.len();
        let findings = self.find(detectors, end);
        self.release_with(&findings, end, found, None).0
    }

    /// Like [`finish`](Self::finish) for raw JSON text.
    pub fn finish_json(
        &mut self,
        detectors: &Detectors,
        found: &mut Vec<&'static str>,
        state: &mut JsonState,
    ) -> String {
        if self.in_key_block {
            self.pending.clear();
            return String::new();
        }
        let end = self.pending.len();
        let findings = self.find(detectors, end);
        let (released, next) = self.release_with(&findings, end, found, Some(*state));
        if let Some(next) = next {
            *state = next;
        }
        released
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

/// The start of a private-key block in `text` whose end is not there yet.
fn open_key_block(text: &str) -> Option<usize> {
    let begin = text.rfind(KEY_BEGIN)?;
    let rest = &text[begin..];
    let header_end = rest.find(KEY_BEGIN_TAIL).map(|h| h + KEY_BEGIN_TAIL.len());
    match header_end {
        // A header still arriving, or one that names no private key.
        None if rest.len() < 64 => Some(begin),
        None => None,
        // Open until its whole END line is there.
        Some(h) => {
            let closed = rest[h..]
                .find(KEY_END)
                .is_some_and(|e| rest[h + e..].contains(KEY_BEGIN_TAIL));
            (!closed).then_some(begin)
        }
    }
}

/// Characters a secret or personal-data value can hold.
fn candidate(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '_'
                | '+'
                | '/'
                | '='
                | '.'
                | ':'
                | '@'
                | '%'
                | '~'
                | '('
                | ')'
                | '$'
                | '!'
                | '*'
                | '&'
                | '#'
                | '^'
        )
}

/// Where the candidate tail of `text` starts: the trailing run of candidate characters, joined
/// across single spaces between digits or capitals (card numbers, IBANs, phone numbers; a
/// trailing space after one may be followed by the next group), at most [`MAX_MATCH_BYTES`] long.
fn candidate_tail(text: &str) -> usize {
    let floor = floor_char_boundary(text, text.len().saturating_sub(MAX_MATCH_BYTES));
    let groupish = |c: char| c.is_ascii_digit() || c.is_ascii_uppercase();
    let mut start = text.len();
    // The character after the one looked at (none at the end).
    let mut after: Option<char> = None;
    let mut chars = text[floor..].char_indices().rev().peekable();
    while let Some((i, c)) = chars.next() {
        let at = floor + i;
        if candidate(c) {
            start = at;
        } else if c == ' ' && chars.peek().is_some_and(|(_, before)| groupish(*before)) {
            let trailing = after.is_none();
            let joins_run = start == at + 1 && after.is_some_and(groupish);
            if !(trailing || joins_run) {
                break;
            }
            start = at;
        } else {
            break;
        }
        after = Some(c);
    }
    start
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::{JsonState, TextScanner, candidate_tail};
    use crate::dlp::detect::Detectors;

    fn detectors(pii: bool) -> &'static Detectors {
        static WITH_PII: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
        static SECRETS: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
        let cell = if pii { &WITH_PII } else { &SECRETS };
        cell.get_or_init(|| Detectors::new(pii, &[]).unwrap())
    }

    fn through(pieces: &[&str], pii: bool) -> (String, Vec<&'static str>, usize) {
        let d = detectors(pii);
        let mut scanner = TextScanner::default();
        let mut found = Vec::new();
        let mut out = String::new();
        let mut most_held = 0;
        for p in pieces {
            out.push_str(&scanner.push(d, p, &mut found));
            most_held = most_held.max(scanner.held());
        }
        out.push_str(&scanner.finish(d, &mut found));
        (out, found, most_held)
    }

    #[test]
    fn a_secret_split_anywhere_is_redacted_and_prose_flows() {
        // Made at run time: no key-shaped literal sits in the repository.
        let text = format!(
            "here is the key {}{} and some more words after it.",
            "AKIA", "IOSFODNN7EXAMPLE"
        );
        let text = text.as_str();
        for cut in 1..text.len() - 1 {
            for cut2 in [cut + 1, (cut + 7).min(text.len())] {
                let pieces = [&text[..cut], &text[cut..cut2], &text[cut2..]];
                let (out, found, _) = through(&pieces, false);
                assert_eq!(
                    out,
                    "here is the key [REDACTED:secret.aws_access_key_id] and some more words after it."
                );
                assert_eq!(found, ["secret.aws_access_key_id"]);
            }
        }
        let (out, found, held) = through(&["Hello", " there", ", how", " are", " you?"], true);
        assert_eq!(out, "Hello there, how are you?");
        assert!(found.is_empty());
        assert!(held <= 5, "held {held} bytes of plain prose");
    }

    #[test]
    fn values_after_their_key_are_held_even_without_a_prefix() {
        let value = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE";
        let text = format!(
            "aws_secret_access_key = {value}\nand postgres://app:{}@db/app ok",
            "Sup3rS3cret"
        );
        for size in [1, 2, 3, 5, 8] {
            let pieces: Vec<String> = text
                .as_bytes()
                .chunks(size)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (out, found, _) = through(&pieces, false);
            assert_eq!(
                out,
                "aws_secret_access_key = [REDACTED:secret.aws_secret_access_key]\nand postgres://app:[REDACTED:secret.url_password]@db/app ok",
                "pieces of {size}"
            );
            assert_eq!(
                found,
                ["secret.aws_secret_access_key", "secret.url_password"]
            );
        }
        // Ordinary words are not held when only secrets are looked for.
        let d = detectors(false);
        let mut scanner = TextScanner::default();
        let mut found = Vec::new();
        assert_eq!(scanner.push(d, "The quick", &mut found), "The quick");
        assert_eq!(scanner.push(d, " sk", &mut found), " ");
        assert_eq!(scanner.push(d, "ip it", &mut found), "skip it");
    }

    #[test]
    fn card_numbers_split_on_their_spaces_are_caught() {
        let (out, found, _) = through(&["pay with 4111 ", "1111 ", "1111 1111 today"], true);
        assert_eq!(out, "pay with [REDACTED:pii.payment_card] today");
        assert_eq!(found, ["pii.payment_card"]);
        assert_eq!(candidate_tail("pay with 4111 1111"), 9);
    }

    #[test]
    fn a_private_key_block_is_held_then_redacted() {
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n".repeat(20);
        // The markers are put together at run time: no key-shaped block sits in the repository.
        let (begin, end) = (
            ["-----BEGIN", " PRIVATE KEY-----"].concat(),
            ["-----END", " PRIVATE KEY-----"].concat(),
        );
        let pem = format!("{begin}\n{body}{end}\n");
        let pieces: Vec<&str> = pem
            .as_bytes()
            .chunks(37)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let mut all = vec!["key: "];
        all.extend(pieces);
        all.push(" done");
        let (out, found, _) = through(&all, false);
        assert_eq!(out, "key: [REDACTED:secret.private_key]\n done");
        assert_eq!(found, ["secret.private_key"]);
    }

    #[test]
    fn raw_json_is_redacted_inside_strings_only() {
        let d = Detectors::new(true, &[]).unwrap();
        let mut scanner = TextScanner::default();
        let mut state = JsonState::default();
        let mut found = Vec::new();
        let mut out = String::new();
        for piece in [
            "{\"card\": 4111111111111111, \"note\": \"AKIAIOSF",
            "ODNN7EXAMPLE\"}",
        ] {
            out.push_str(&scanner.push_json(&d, piece, &mut found, &mut state));
        }
        out.push_str(&scanner.finish_json(&d, &mut found, &mut state));
        assert_eq!(
            out,
            "{\"card\": 4111111111111111, \"note\": \"[REDACTED:secret.aws_access_key_id]\"}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }
}
