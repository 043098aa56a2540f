//! Trigger literals: for each regular expression, a set of byte strings one of which is in any
//! text it matches, taken from the expression itself.
//!
//! Guards the hot path's cost: a set of a hundred patterns with bounded gaps is too large for a
//! lazy DFA (it thrashes, and scanning costs milliseconds per kilobyte). Instead one Aho-Corasick
//! pass finds the triggers in a text, and only the patterns triggered run, each with its own small
//! DFA. The literals come from `regex-syntax`'s extractor, the one the regex engine itself uses for
//! its prefilters: the prefixes or the suffixes of every match, and both when each is selective (the
//! expression then runs only where a starting literal comes before an ending one).

use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};

/// Shortest literal worth filtering on: shorter ones are in nearly every text, except the few
/// characters prose rarely holds and markup and shell commands always do.
const MIN_LEN: usize = 2;

/// Shortest literal of a second, confirming set: common short words would be found in most text.
const STRONG_LEN: usize = 5;

/// Longest literal kept.
const MAX_LEN: usize = 6;

/// Single characters selective enough to filter on.
const RARE_CHARACTERS: &[u8] = b"<>`$|&;{}[\\";

/// The trigger literals of an expression: one of `start` begins every match, one of `end` ends
/// every match; a side is `None` when it has no usable set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    /// Literals that begin every match: the expression need only be tried where one was found.
    pub start: Option<Vec<Vec<u8>>>,
    /// Literals that end every match.
    pub end: Option<Vec<Vec<u8>>>,
}

/// The trigger literals of `pattern` at both ends of its matches.
pub fn triggers(pattern: &str) -> Result<Triggers, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| format!("cannot parse a built-in rule ({e})"))?;
    let side = |kind: ExtractKind| {
        let suffix = matches!(kind, ExtractKind::Suffix);
        let mut seq = Extractor::new()
            .kind(kind)
            .limit_literal_len(MAX_LEN)
            .extract(&hir);
        // Cut to a few bytes at the matching end: the alternatives' cross products
        // collapse into a few hundred short literals, a small automaton that stays in cache.
        if suffix {
            seq.keep_last_bytes(MAX_LEN);
        } else {
            seq.keep_first_bytes(MAX_LEN);
        }
        usable(seq)
    };
    let (start, end) = (side(ExtractKind::Prefix), side(ExtractKind::Suffix));
    // The side whose shortest literal is longer is selective enough alone (between equals, the
    // start, where a found literal says where to try the expression); the other joins it only
    // when it is as selective, since every literal found costs a step of the scan.
    let shortest = |side: &Option<Vec<Vec<u8>>>| {
        side.as_ref()
            .and_then(|l| l.iter().map(Vec::len).min())
            .unwrap_or(0)
    };
    let strong = |side: &Option<Vec<Vec<u8>>>| {
        side.as_ref().is_some_and(|literals| {
            literals
                .iter()
                .all(|l| l.len() >= STRONG_LEN || l.iter().any(|b| RARE_CHARACTERS.contains(b)))
        })
    };
    let (strong_start, strong_end) = (strong(&start), strong(&end));
    Ok(if shortest(&start) >= shortest(&end) {
        Triggers {
            end: end.filter(|_| strong_end),
            start,
        }
    } else {
        Triggers {
            start: start.filter(|_| strong_start),
            end,
        }
    })
}

/// The literals of `seq`, when it is finite and each is long enough to be selective.
fn usable(mut seq: Seq) -> Option<Vec<Vec<u8>>> {
    seq.dedup();
    let literals = seq.literals()?;
    let selective = |bytes: &[u8]| {
        bytes.len() >= MIN_LEN || (bytes.len() == 1 && RARE_CHARACTERS.contains(&bytes[0]))
    };
    if literals.is_empty() || !literals.iter().all(|l| selective(l.as_bytes())) {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::triggers;

    #[test]
    fn literals_come_from_both_ends() {
        let t = triggers(r"(?-u:\b)(ignore|disregard) all (instructions|rules)").unwrap();
        let sorted = |side: Option<Vec<Vec<u8>>>| {
            let mut side: Vec<String> = side
                .unwrap()
                .into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect();
            side.sort();
            side
        };
        // Cut to their first or last bytes: "ignore" and "disreg" start every match, "ctions"
        // and " rules" end it.
        assert_eq!(sorted(t.start), ["disreg", "ignore"]);
        assert_eq!(sorted(t.end), [" rules", "ctions"]);
        // No literal bounds a leading class, and a common single letter selects nothing: both
        // sides are unusable.
        let t = triggers(r"[a-z]+ ?x").unwrap();
        assert_eq!(t, super::Triggers::default());
    }
}
