//! Normalisation: the text a rule sees, with the usual disguises removed.
//!
//! Guards against evasion: percent-encoding and HTML entities are decoded, Unicode is folded to
//! NFKC (full-width and other compatibility forms become plain letters) and lower case,
//! invisible format characters (zero-width spaces and joiners, bidi controls, tags, variation
//! selectors) are removed, control characters become spaces and whitespace runs collapse to one
//! space. JSON escapes are decoded earlier, by the JSON parser. Decoding repeats until nothing
//! changes, at most [`MAX_ROUNDS`] times: text still changing after that is layered encoding no
//! honest client sends, and is reported as such.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// Most decode-and-fold rounds before text counts as suspiciously layered.
pub const MAX_ROUNDS: usize = 4;

/// Normalised text, and whether it reached a fixed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// The text rules are matched against.
    pub text: Cow<'a, str>,
    /// False when the text was still changing after [`MAX_ROUNDS`] rounds.
    pub settled: bool,
}

/// Normalises `input` (see the module documentation).
pub fn normalize(input: &str) -> Normalized<'_> {
    // The common case: plain ASCII with nothing to decode and nothing to fold.
    if input.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ' || is_plain_punctuation(b)
    }) && !input.contains("  ")
    {
        return Normalized {
            text: Cow::Borrowed(input),
            settled: true,
        };
    }
    let mut current = once(input);
    for _ in 1..MAX_ROUNDS {
        let next = once(&current);
        if next == current {
            return Normalized {
                text: Cow::Owned(current),
                settled: true,
            };
        }
        current = next;
    }
    let settled = once(&current) == current;
    Normalized {
        text: Cow::Owned(current),
        settled,
    }
}

fn is_plain_punctuation(b: u8) -> bool {
    b.is_ascii_punctuation() && b != b'%' && b != b'&'
}

/// One round: decode, fold, strip, collapse.
fn once(input: &str) -> String {
    let decoded: Cow<'_, str> = if input.contains('%') {
        percent_encoding::percent_decode_str(input).decode_utf8_lossy()
    } else {
        Cow::Borrowed(input)
    };
    let decoded: Cow<'_, str> = if decoded.contains('&') {
        Cow::Owned(html_escape::decode_html_entities(&decoded).into_owned())
    } else {
        decoded
    };
    let folded: Cow<'_, str> = if decoded.is_ascii() {
        Cow::Owned(decoded.to_ascii_lowercase())
    } else {
        Cow::Owned(
            decoded
                .nfkc()
                .collect::<String>()
                .to_lowercase()
                .nfkc()
                .collect(),
        )
    };
    let mut out = String::with_capacity(folded.len());
    let mut in_space = false;
    for c in folded.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Format characters that render as nothing and are used to split words a filter looks for.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s).text.into_owned()
    }

    #[test]
    fn disguises_are_removed() {
        assert_eq!(n("<SCRIPT>"), "<script>");
        assert_eq!(n("%3Cscript%3E"), "<script>");
        assert_eq!(n("&lt;script&gt;"), "<script>");
        assert_eq!(n("&#x3C;script&#62;"), "<script>");
        assert_eq!(n("ｉｇｎｏｒｅ ａｌｌ"), "ignore all");
        assert_eq!(n("ig\u{200B}nore pre\u{200D}vious"), "ignore previous");
        assert_eq!(n("ignore\n\n\t  all"), "ignore all");
        assert_eq!(n("%253Cscript%253E"), "<script>");
        assert_eq!(
            n("plain text, nothing to do."),
            "plain text, nothing to do."
        );
    }

    #[test]
    fn deep_layering_is_reported() {
        let mut s = String::from("<");
        for _ in 0..8 {
            s = s.replace('%', "%25").replace('<', "%3C");
        }
        assert!(!normalize(&s).settled);
    }
}
