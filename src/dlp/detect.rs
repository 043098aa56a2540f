//! The detectors: secrets in their published formats, personal data with its checksums, and
//! canaries, found in text with their positions.
//!
//! Guards against false alarms as much as misses: a format with a fixed prefix and length
//! (`AKIA…`, `ghp_…`, `sk-ant-…`) is matched as published; a format that is loose (an AWS secret
//! key is any 40 base64 characters) is matched only beside its keyword and with enough entropy;
//! card numbers must pass Luhn, IBANs their mod-97 check, JWTs must have a JSON header naming an
//! algorithm. Git SHAs, UUIDs, hashes in code and base64 images match none of them.

use aho_corasick::AhoCorasick;
use base64::Engine;
use regex::{Regex, RegexSet};

/// One finding: the rule and the byte range of the matched text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The rule id (`secret.<kind>`, `pii.<kind>`, `canary`).
    pub rule: &'static str,
    /// Start of the match (bytes).
    pub start: usize,
    /// End of the match (bytes, exclusive).
    pub end: usize,
}

/// How a regular expression's match is confirmed.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    /// Shannon entropy of the captured group at least this many bits per character.
    Entropy(f64),
    Luhn,
    Iban,
    Jwt,
    Ssn,
    /// At least 8 and at most 15 digits.
    Phone,
    /// A password in a URL that is not a placeholder.
    UrlPassword,
    /// A classic GitHub token's last six characters are the CRC32 of the thirty before them, in
    /// base62 (`0-9A-Za-z`); fine-grained `github_pat_` tokens carry no documented checksum.
    GitHubChecksum,
}

struct Pattern {
    rule: &'static str,
    regex: &'static str,
    /// The capture group that is the secret (0: the whole match).
    group: usize,
    check: Check,
    pii: bool,
}

/// The longest text one pattern other than a private-key block can match, in bytes: what a
/// stream scanner must hold back at most.
pub const MAX_MATCH_BYTES: usize = 256;
/// The longest private-key block held back whole (an RSA-4096 PEM key is about 3.3 KB).
pub const MAX_KEY_BLOCK_BYTES: usize = 8 * 1024;

const PATTERNS: &[Pattern] = &[
    Pattern {
        rule: "secret.private_key",
        regex: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]{16,}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.aws_access_key_id",
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.aws_secret_access_key",
        regex: r#"(?i:aws[_ .-]?(?:secret[_ .-]?(?:access[_ .-]?)?key|sk)["']?\s*[:=]\s*["']?)([A-Za-z0-9/+]{40})"#,
        group: 1,
        check: Check::Entropy(4.0),
        pii: false,
    },
    Pattern {
        rule: "secret.github_token",
        regex: r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b",
        group: 0,
        check: Check::GitHubChecksum,
        pii: false,
    },
    Pattern {
        rule: "secret.gitlab_token",
        regex: r"\bglpat-[A-Za-z0-9_-]{20,}",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.slack_token",
        regex: r"\bxox[abposr]-[0-9A-Za-z-]{10,250}|https://hooks\.slack\.com/services/T[0-9A-Z]{8,}/B[0-9A-Z]{8,}/[0-9A-Za-z]{20,}",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.stripe_live_key",
        regex: r"\b(?:sk|rk)_live_[0-9A-Za-z]{24,247}\b",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.anthropic_api_key",
        regex: r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,200}",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.openai_api_key",
        regex: r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,200}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.google_api_key",
        regex: r"\bAIza[0-9A-Za-z_-]{35}",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.portcullis_api_key",
        regex: r"\bpcl_[A-Za-z0-9_-]{43}",
        group: 0,
        check: Check::None,
        pii: false,
    },
    Pattern {
        rule: "secret.jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
        group: 0,
        check: Check::Jwt,
        pii: false,
    },
    Pattern {
        rule: "secret.url_password",
        regex: r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@]{1,64}:([^\s/@]{3,128})@[A-Za-z0-9.-]+",
        group: 1,
        check: Check::UrlPassword,
        pii: false,
    },
    Pattern {
        rule: "secret.connection_string_password",
        regex: r"(?i:(?:server|host|data source|address|addr)\s*=[^\n]*?;\s*(?:password|pwd)\s*=\s*)([^;\s'\x22]{3,128})",
        group: 1,
        check: Check::UrlPassword,
        pii: false,
    },
    Pattern {
        rule: "pii.email",
        regex: r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b",
        group: 0,
        check: Check::None,
        pii: true,
    },
    Pattern {
        rule: "pii.payment_card",
        regex: r"\b\d(?:[ -]?\d){12,18}\b",
        group: 0,
        check: Check::Luhn,
        pii: true,
    },
    Pattern {
        rule: "pii.iban",
        regex: r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        group: 0,
        check: Check::Iban,
        pii: true,
    },
    Pattern {
        rule: "pii.phone",
        regex: r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}\b",
        group: 0,
        check: Check::Phone,
        pii: true,
    },
    Pattern {
        rule: "pii.us_ssn",
        regex: r"\b\d{3}-\d{2}-\d{4}\b",
        group: 0,
        check: Check::Ssn,
        pii: true,
    },
];

/// The detectors in force: the secrets (and, when chosen, personal data) patterns and canaries.
#[derive(Debug)]
pub struct Detectors {
    /// Words one of which every secret pattern needs (case-folded); text with none skips the
    /// regular expressions. Not used with the personal-data detectors, whose patterns need none.
    anchors: Option<AhoCorasick>,
    set: RegexSet,
    regexes: Vec<(usize, Regex)>,
    canaries: Option<AhoCorasick>,
    canary_texts: Vec<String>,
    pii: bool,
    keyed: Regex,
}

/// Every secret pattern contains one of these, exactly as written (the keyword patterns ignore
/// case, so their anchors come in the three spellings text uses). Matched case-sensitively, so the
/// automaton can use its vectorised prefilter.
const ANCHORS: &[&str] = &[
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AGPA",
    "AIDA",
    "AROA",
    "ANPA",
    "ANVA",
    "AIPA",
    "aws",
    "AWS",
    "Aws",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "hooks.slack.com",
    "_live_",
    "sk-",
    "AIza",
    "pcl_",
    "eyJ",
    "-----BEGIN",
    "://",
    "password",
    "PASSWORD",
    "Password",
    "pwd",
    "PWD",
    "Pwd",
];

/// How the secrets with a fixed prefix begin: text that may still grow into one of them is held.
const SECRET_PREFIXES: &[&str] = &[
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AGPA",
    "AIDA",
    "AROA",
    "ANPA",
    "ANVA",
    "AIPA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxa-",
    "xoxb-",
    "xoxo-",
    "xoxp-",
    "xoxr-",
    "xoxs-",
    "https://hooks.slack.com/",
    "sk_live_",
    "rk_live_",
    "sk-",
    "AIza",
    "pcl_",
    "eyJ",
    "-----BEGIN",
];

/// The words after which a value with no prefix of its own is a secret: an AWS secret key's
/// keyword, or a URL's user name before its password.
const KEYED: &str = r#"(?i)(?:aws[_ .-]?(?:secret[_ .-]?(?:access[_ .-]?)?key|sk)["']?\s*[:=]\s*["']?|\b[a-z][a-z0-9+.-]{1,20}://[^\s/:@]{1,64}:|\b(?:password|pwd)\s*=\s*)$"#;

impl Detectors {
    /// The secret detectors, the personal-data ones when `pii`, and `canaries` (literal strings).
    pub fn new(pii: bool, canaries: &[String]) -> Result<Detectors, String> {
        let canaries_list = canaries;
        let chosen: Vec<usize> = PATTERNS
            .iter()
            .enumerate()
            .filter(|(_, p)| pii || !p.pii)
            .map(|(i, _)| i)
            .collect();
        let set = RegexSet::new(chosen.iter().map(|&i| PATTERNS[i].regex))
            .map_err(|e| format!("the detector patterns do not compile ({e})"))?;
        let regexes = chosen
            .iter()
            .map(|&i| Regex::new(PATTERNS[i].regex).map(|r| (i, r)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the detector patterns do not compile ({e})"))?;
        let canaries = if canaries.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(canaries)
                    .map_err(|_| "the canaries cannot be matched".to_owned())?,
            )
        };
        let anchors = if pii {
            None
        } else {
            Some(
                aho_corasick::AhoCorasickBuilder::new()
                    .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                    .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                    .build(ANCHORS)
                    .map_err(|_| "the detector anchors cannot be matched".to_owned())?,
            )
        };
        Ok(Detectors {
            anchors,
            set,
            regexes,
            canaries,
            canary_texts: canaries_list.to_vec(),
            pii,
            keyed: Regex::new(KEYED)
                .map_err(|e| format!("the detector patterns do not compile ({e})"))?,
        })
    }

    /// Where, in the trailing run `tail` of a stream's text (after `before`), a secret or
    /// personal-data value could still be in progress: `None` when none can, so the run is
    /// released. With personal data on, any run can (an e-mail's local part is any word); with
    /// secrets only, a run that may still grow into a prefixed secret or a canary, or a value
    /// that follows its key (`aws_secret_access_key = `, `scheme://user:`).
    pub fn may_continue(&self, before: &str, tail: &str) -> Option<usize> {
        if tail.is_empty() {
            return None;
        }
        if self.pii {
            return Some(0);
        }
        let compatible = |s: &str, p: &str| p.starts_with(s) || s.starts_with(p);
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let mut previous: Option<char> = None;
        let mut keyed_text = String::with_capacity(before.len() + tail.len());
        keyed_text.push_str(before);
        for (j, c) in tail.char_indices() {
            // A value that follows its key, from where the key ends.
            let after_key = match previous {
                None => true,
                Some(p) => matches!(p, ':' | '=' | '"' | '\'') || p.is_whitespace(),
            };
            if after_key && self.keyed.is_match(&keyed_text) {
                return Some(j);
            }
            // A prefixed secret or a canary, from a word boundary.
            if !previous.is_some_and(word) {
                let s = &tail[j..];
                if SECRET_PREFIXES.iter().any(|p| compatible(s, p))
                    || self.canary_texts.iter().any(|c| compatible(s, c))
                {
                    return Some(j);
                }
            }
            keyed_text.push(c);
            previous = Some(c);
        }
        None
    }

    /// Every finding in `text`, by position, without overlaps (the earlier, then the longer, wins).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        if let Some(canaries) = &self.canaries {
            for m in canaries.find_iter(text) {
                found.push(Finding {
                    rule: "canary",
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
        let anchored = self.anchors.as_ref().is_none_or(|a| a.is_match(text));
        let matched = anchored.then(|| self.set.matches(text));
        if let Some(matched) = matched.filter(regex::SetMatches::matched_any) {
            for (slot, (index, regex)) in self.regexes.iter().enumerate() {
                if !matched.matched(slot) {
                    continue;
                }
                let pattern = &PATTERNS[*index];
                for captures in regex.captures_iter(text) {
                    let Some(m) = captures.get(pattern.group) else {
                        continue;
                    };
                    if confirmed(pattern.check, m.as_str()) {
                        found.push(Finding {
                            rule: pattern.rule,
                            start: m.start(),
                            end: m.end(),
                        });
                    }
                }
            }
        }
        // Overlaps: a secret (or canary) wins over personal data, then the earlier, then the
        // longer match.
        found.sort_by_key(|f| {
            (
                f.rule.starts_with("pii."),
                f.start,
                std::cmp::Reverse(f.end),
            )
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            if kept.iter().all(|k| f.end <= k.start || f.start >= k.end) {
                kept.push(f);
            }
        }
        kept.sort_by_key(|f| f.start);
        kept
    }

    /// `text` with every finding replaced by `[REDACTED:<rule>]`, and the findings.
    pub fn redact(&self, text: &str) -> (String, Vec<Finding>) {
        let found = self.find(text);
        (replace(text, &found), found)
    }
}

/// `text` with each finding replaced by `[REDACTED:<rule>]`.
pub fn replace(text: &str, found: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(text.get(at..f.start).unwrap_or_default());
        out.push_str("[REDACTED:");
        out.push_str(f.rule);
        out.push(']');
        at = f.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

fn confirmed(check: Check, text: &str) -> bool {
    match check {
        Check::None => true,
        Check::GitHubChecksum => text.starts_with("github_pat_") || github_checksum(text),
        Check::Entropy(bits) => entropy(text) >= bits,
        Check::Luhn => {
            let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
            (13..=19).contains(&digits.len()) && luhn(&digits) && card_prefix(&digits)
        }
        Check::Iban => iban(text),
        Check::Jwt => jwt(text),
        Check::Ssn => ssn(text),
        Check::Phone => {
            let digits = text.chars().filter(char::is_ascii_digit).count();
            (8..=15).contains(&digits)
        }
        Check::UrlPassword => {
            let lower = text.to_ascii_lowercase();
            !(lower.starts_with('$')
                || lower.starts_with('{')
                || lower.starts_with("[redacted")
                || lower.starts_with('<')
                || lower.starts_with('%')
                || [
                    "password", "pass", "passwd", "secret", "changeme", "xxx", "****", "...",
                ]
                .contains(&lower.as_str()))
        }
    }
}

/// Whether a classic GitHub token (`ghp_` and 36 characters) carries its checksum: the CRC32 of
/// the 30 random characters, as base62 (`0-9A-Za-z`) in the last 6. A random look-alike passes
/// with a chance of one in 62^6 / 2^32, about 13.
pub fn github_checksum(token: &str) -> bool {
    let Some((random, checksum)) = token
        .get(4..)
        .filter(|rest| rest.len() == 36 && rest.is_ascii())
        .map(|rest| rest.split_at(30))
    else {
        return false;
    };
    let mut value: u64 = 0;
    for c in checksum.bytes() {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return false,
        };
        value = value * 62 + u64::from(digit);
    }
    value == u64::from(crc32fast::hash(random.as_bytes()))
}

/// Shannon entropy in bits per character.
pub fn entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in text.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Issuer prefixes of the major card networks (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay), so that a Luhn-valid run of digits in a log is not taken for a card.
fn card_prefix(digits: &[u32]) -> bool {
    let n = |k: usize| digits.iter().take(k).fold(0u32, |acc, d| acc * 10 + d);
    matches!(n(1), 4)
        || (51..=55).contains(&n(2))
        || (2221..=2720).contains(&n(4))
        || matches!(n(2), 34 | 37 | 36 | 38 | 62 | 65)
        || n(4) == 6011
        || (3528..=3589).contains(&n(4))
        || (300..=305).contains(&n(3))
}

fn iban(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        for digit in if value >= 10 {
            vec![value / 10, value % 10]
        } else {
            vec![value]
        } {
            remainder = (remainder * 10 + digit) % 97;
        }
    }
    remainder == 1
}

fn jwt(text: &str) -> bool {
    let Some(header) = text.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.get("alg").is_some())
}

fn ssn(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::{Detectors, entropy, iban};

    #[test]
    fn published_formats_match_and_look_alikes_do_not() {
        let d = Detectors::new(true, &["CANARY-7f3a".to_owned()]).unwrap();
        let rules =
            |text: &str| -> Vec<&'static str> { d.find(text).iter().map(|f| f.rule).collect() };
        assert_eq!(
            rules(&format!("key {}{} here", "AKIA", "IOSFODNN7EXAMPLE")),
            ["secret.aws_access_key_id"]
        );
        assert_eq!(rules("card 4111 1111 1111 1111."), ["pii.payment_card"]);
        assert!(
            rules("order 4111 1111 1111 1112").is_empty(),
            "not Luhn-valid"
        );
        assert_eq!(rules("IBAN GB82 WEST 1234 5698 7654 32"), ["pii.iban"]);
        assert!(
            rules("GB82 WEST 1234 5698 7654 33").is_empty(),
            "bad checksum"
        );
        assert_eq!(rules("mail bob@example.org now"), ["pii.email"]);
        assert_eq!(rules("call +44 20 7946 0958"), ["pii.phone"]);
        assert_eq!(rules("ssn 123-45-6789"), ["pii.us_ssn"]);
        assert!(rules("ssn 000-45-6789").is_empty());
        assert_eq!(rules("the CANARY-7f3a leaked"), ["canary"]);
        assert_eq!(
            rules(&format!(
                "postgres://app:{}@db.internal:5432/app",
                "s3cr3tPa55"
            )),
            ["secret.url_password"]
        );
        assert!(rules("postgres://app:${DB_PASSWORD}@db/app").is_empty());
        assert_eq!(
            rules(&format!(
                "Server=db.internal;Database=app;User Id=app;Password={};",
                "Tr0ub4dor3"
            )),
            ["secret.connection_string_password"]
        );
        assert!(rules("Server=db;Database=app;Password=${DB_PASSWORD};").is_empty());
        for benign in [
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "mentions sk- and AKIA as words, and ghp_ too",
        ] {
            assert!(rules(benign).is_empty(), "{benign}: {:?}", rules(benign));
        }
        assert!(iban("DE89370400440532013000"));
        assert!(entropy("aaaaaaaa") < 1.0 && entropy("Zq8hF3kL0pXw") > 3.0);
    }

    #[test]
    fn github_tokens_carry_their_checksum() {
        // Tokens of GitHub's published format (a CRC32 of the random part, in base62).
        for token in [
            "M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V4",
            "HEEjXavM6wKtyhAUwDblMznMEhWyTt4XwY6f",
            "vKdQ4XtRZOBFd16YZEgyLKyQ8Cee4g2NJ0mT",
        ] {
            assert!(super::github_checksum(&format!("ghp_{token}")), "{token}");
        }
        assert!(!super::github_checksum(
            "ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"
        ));
        assert!(!super::github_checksum(
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
        ));
        assert!(!super::github_checksum(
            "ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V/"
        ));
        assert!(!super::github_checksum("ghp_short"));
        // Never split inside a character.
        assert!(!super::github_checksum(&format!(
            "ghp_{}ééé",
            "a".repeat(30)
        )));
    }

    #[test]
    fn redaction_replaces_each_finding() {
        let d = Detectors::new(false, &[]).unwrap();
        let (out, found) = d.redact(&format!(
            "a {}IOSFODNN7EXAMPLE b {}_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V4 c",
            "AKIA", "ghp"
        ));
        assert_eq!(found.len(), 2);
        assert_eq!(
            out,
            "a [REDACTED:secret.aws_access_key_id] b [REDACTED:secret.github_token] c"
        );
    }
}
