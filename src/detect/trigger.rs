//! Trigger literals: for each regular expression, a set of byte strings one of which is in any
//! text it matches, taken from the expression itself.
//!
//! Guards the hot path's cost: a set of a hundred patterns with bounded gaps is too large for a
//! lazy DFA (it thrashes, and scanning costs milliseconds per kilobyte). Instead one Aho-Corasick
//! pass finds the triggers in a text, and only the patterns triggered run, each with its own small
//! DFA. The literals come from `regex-syntax`'s extractor, the one the regex engine itself uses for
//! its prefilters: the prefixes or the suffixes of every match, and both when each is selective (the
//! expression then runs only where a starting literal comes before an ending one). When no usable
//! set ends every match, one that begins a later part of every match (the payload of a script
//! pattern, the decoder of a code one) stands in for it: found after a starting literal, it is as
//! necessary for a match as an ending one.

use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};
use regex_syntax::hir::{Hir, HirKind};

/// Shortest literal worth filtering on: shorter ones are in nearly every text, except the few
/// characters prose rarely holds and markup and shell commands always do.
const MIN_LEN: usize = 2;

/// Shortest literal of a second, confirming set: common short words would be found in most text.
const STRONG_LEN: usize = 5;

/// Shortest literal of an inner set (see [`Triggers::end`]) without a rare character.
const INNER_LEN: usize = 4;

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
    /// Literals that end every match, or (with `inner`) begin a later part of every match.
    pub end: Option<Vec<Vec<u8>>>,
    /// When `end` begins a later part: how many bytes after the match's start it begins, at
    /// least.
    pub inner: Option<usize>,
}

/// The trigger literals of `pattern` at both ends of its matches.
pub fn triggers(pattern: &str) -> Result<Triggers, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| format!("cannot parse a built-in rule ({e})"))?;
    let side = |kind: ExtractKind| usable(extract(&hir, kind));
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
    // With a starting set, a later part's literals stand in for weak ending ones, or for
    // strong ones that select less (a single `>`).
    if start.is_some() {
        let ending = end
            .as_ref()
            .filter(|_| strong_end)
            .map(|literals| selectivity(literals));
        if let Some((score, offset, literals)) = inner(&hir)
            && ending.is_none_or(|ending| score > ending)
        {
            return Ok(Triggers {
                start,
                end: Some(literals),
                inner: Some(offset),
            });
        }
    }
    Ok(if shortest(&start) >= shortest(&end) {
        Triggers {
            end: end.filter(|_| strong_end),
            start,
            inner: None,
        }
    } else {
        Triggers {
            start: start.filter(|_| strong_start),
            end,
            inner: None,
        }
    })
}

/// Literals beginning a later part of every match, how selective they are (see
/// [`selectivity`]) and how far after the match's start the part begins at least: of the
/// expression's top-level sequence, the parts after the first that cannot match empty whose
/// every match begins with one of a usable set, the most selective (the later between equals).
/// A part that may follow the first directly is left out, as is one whose literals earlier parts
/// all hold already: either would be found wherever the expression starts (`script` after `<`,
/// and the `script` of `</script>`).
fn inner(hir: &Hir) -> Option<(usize, usize, Vec<Vec<u8>>)> {
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let shortest = |part: &Hir| part.properties().minimum_len().unwrap_or(0);
    let first = parts.iter().position(|part| shortest(part) > 0)?;
    let mut earlier: Vec<Vec<u8>> = Vec::new();
    let mut adjacent = true;
    let mut offset = 0;
    let mut best: Option<(usize, usize, Vec<Vec<u8>>)> = None;
    for (i, part) in parts.iter().enumerate() {
        let seq = extract(part, ExtractKind::Prefix);
        if i > first && !adjacent {
            let candidate = usable(seq.clone()).filter(|literals| {
                literals
                    .iter()
                    .all(|l| l.len() >= INNER_LEN || (rare(l) && l.len() >= 2))
                    && !literals
                        .iter()
                        .all(|l| earlier.iter().any(|e| memchr::memmem::find(e, l).is_some()))
            });
            if let Some(literals) = candidate {
                let score = selectivity(&literals);
                if best.as_ref().is_none_or(|(b, _, _)| score >= *b) {
                    best = Some((score, offset, literals));
                }
            }
        }
        if i > first {
            adjacent &= shortest(part) == 0;
        }
        offset += shortest(part);
        earlier.extend(
            seq.literals()
                .into_iter()
                .flatten()
                .map(|l| l.as_bytes().to_vec()),
        );
    }
    best
}

/// How selective a set of literals is: the least of their lengths, counting two more for a
/// literal with a rare character.
fn selectivity(literals: &[Vec<u8>]) -> usize {
    literals
        .iter()
        .map(|l| l.len() + if rare(l) { 2 } else { 0 })
        .min()
        .unwrap_or(0)
}

/// Whether `literal` holds one of the [`RARE_CHARACTERS`].
fn rare(literal: &[u8]) -> bool {
    literal.iter().any(|b| RARE_CHARACTERS.contains(b))
}

/// The literals of `hir` at one end of its matches, cut to [`MAX_LEN`] bytes at that end: the
/// alternatives' cross products collapse into a few hundred short literals, a small automaton
/// that stays in cache.
fn extract(hir: &Hir, kind: ExtractKind) -> Seq {
    let suffix = matches!(kind, ExtractKind::Suffix);
    let mut seq = Extractor::new()
        .kind(kind)
        .limit_literal_len(MAX_LEN)
        .extract(hir);
    if suffix {
        seq.keep_last_bytes(MAX_LEN);
    } else {
        seq.keep_first_bytes(MAX_LEN);
    }
    seq
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
    #[test]
    #[ignore = "prints every built-in expression's triggers"]
    fn print_triggers() {
        for (id, _, patterns) in crate::detect::builtin::rules() {
            for (i, pattern) in patterns.iter().enumerate() {
                if let crate::detect::rules::Pattern::Regex(r)
                | crate::detect::rules::Pattern::Addressed(r) = pattern
                {
                    let t = super::triggers(r).unwrap();
                    let show = |side: &Option<Vec<Vec<u8>>>| {
                        side.as_ref().map(|l| {
                            l.iter()
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                                .collect::<Vec<_>>()
                        })
                    };
                    println!(
                        "{id}[{i}] start={:?} end={:?}",
                        show(&t.start),
                        show(&t.end)
                    );
                }
            }
        }
    }

    use super::triggers;

    /// A side's literals as sorted text (none for an unusable side).
    fn sorted(side: Option<Vec<Vec<u8>>>) -> Vec<String> {
        let mut side: Vec<String> = side
            .unwrap_or_default()
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        side.sort();
        side
    }

    #[test]
    fn literals_come_from_both_ends() {
        let t = triggers(r"(?-u:\b)(ignore|disregard) all (instructions|rules)").unwrap();
        // Cut to their first or last bytes: "ignore" and "disreg" start every match, "ctions"
        // and " rules" end it.
        assert_eq!(sorted(t.start), ["disreg", "ignore"]);
        assert_eq!(sorted(t.end), [" rules", "ctions"]);
        // No literal bounds a leading class, and a common single letter selects nothing: both
        // sides are unusable.
        let t = triggers(r"[a-z]+ ?x").unwrap();
        assert_eq!(t, super::Triggers::default());
    }

    #[test]
    fn a_later_part_stands_in_for_weak_ending_literals() {
        // A complete element: `>` ends every match but is in every tag; `</` begins a later
        // part, at least 9 bytes after the start (`<script>` and one character). The `script`
        // of the closing tag is in the opening one, and left out.
        let t = triggers(r"<([a-z]+:)?script\b[^>]*>[^<]+</([a-z]+:)?script\s*>").unwrap();
        assert_eq!(sorted(t.start), ["<"]);
        assert_eq!(sorted(t.end), ["</"]);
        assert_eq!(t.inner, Some(9));
        // A call whose argument holds a payload: the payload, not the `(` right after the name.
        let t = triggers(r"(?-u:\b)(eval|exec) ?\(\s*[\x22'](alert|prompt)\(\w").unwrap();
        assert_eq!(sorted(t.end), ["alert", "prompt"]);
        assert_eq!(t.inner, Some(6));
        // Strong ending literals stay.
        let t = triggers(r"(ignore|disregard) all (instructions|rules)").unwrap();
        assert_eq!(t.inner, None);
    }
}
