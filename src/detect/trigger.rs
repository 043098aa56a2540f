//! Trigger literals: for each regular expression, a set of byte strings one of which is in any
//! text it matches, taken from the expression itself.
//!
//! Guards the hot path's cost: a set of a hundred patterns with bounded gaps is too large for a
//! lazy DFA (it thrashes, and scanning costs milliseconds per kilobyte). Instead one Aho-Corasick
//! pass finds the triggers in a text, and only the patterns triggered run, each with its own small
//! DFA. The literals come from `regex-syntax`'s extractor, the one the regex engine itself uses for
//! its prefilters: the prefixes or the suffixes of every match, whichever set's shortest literal is longer.

use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};

/// Shortest literal worth filtering on: shorter ones are in nearly every text, except the few
/// characters prose rarely holds and markup and shell commands always do.
const MIN_LEN: usize = 2;

/// Longest literal kept.
const MAX_LEN: usize = 6;

/// Single characters selective enough to filter on.
const RARE_CHARACTERS: &[u8] = b"<>`$|&;{}[\\";

/// Where the trigger literals of an expression sit in its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every match starts with one: the expression need only be tried where one was found.
    Start,
    /// Every match ends with one.
    End,
}

/// Trigger literals, and which end of a match they are.
pub type Triggers = (End, Vec<Vec<u8>>);

/// The trigger literals of `pattern`; `None` when it has no usable set (it must always run).
pub fn triggers(pattern: &str) -> Result<Option<Triggers>, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| format!("cannot parse a built-in rule ({e})"))?;
    let best = [
        (End::Start, ExtractKind::Prefix),
        (End::End, ExtractKind::Suffix),
    ]
    .into_iter()
    .filter_map(|(end, kind)| {
        let suffix = end == End::End;
        let mut seq = Extractor::new().kind(kind).extract(&hir);
        // Cut to a few bytes at the matching end: the alternatives' cross products
        // collapse into a few hundred short literals, a small automaton that stays in cache.
        if suffix {
            seq.keep_last_bytes(MAX_LEN);
        } else {
            seq.keep_first_bytes(MAX_LEN);
        }
        usable(seq).map(|literals| (end, literals))
    })
    // The set whose shortest literal is longest (short literals are common words); between
    // equals, the start, where a found literal says where to try the expression.
    .max_by_key(|(end, literals)| {
        let shortest = literals.iter().map(Vec::len).min().unwrap_or(0);
        (shortest, *end == End::Start)
    });
    Ok(best)
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
    fn literals_come_from_the_more_selective_end() {
        let t = triggers(r"(?-u:\b)(ignore|disregard) all (instructions|rules)").unwrap();
        assert_eq!(t.as_ref().map(|(end, _)| *end), Some(super::End::Start));
        let mut t: Vec<String> = t
            .unwrap()
            .1
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        t.sort();
        // Cut to their first bytes: "ignore" and "disreg" start every match.
        assert_eq!(t, ["disreg", "ignore"], "{t:?}");
        // No literal bounds a leading class: the pattern always runs.
        assert_eq!(triggers(r"[a-z]+ ?x").unwrap(), None);
    }
}
