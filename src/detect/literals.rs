//! The literal pass: every occurrence of the rule set's literals in a text, from one
//! Aho-Corasick DFA walked in several lanes at once.
//!
//! Guards the hot path's cost. A DFA walk is a chain of dependent loads (each step's table
//! address is the previous step's result), so a single walk, the crate's own search, runs at the
//! latency of the cache holding the table: about 2 ns a byte here when it stays in L1, more for
//! prose, whose walk reaches into the 1.3 MB table. A text is cut into [`LANES`] parts walked in
//! lockstep, whose loads overlap; 1 KiB of prose takes half the time. The walk uses the crate's
//! public automaton interface: the automaton is the crate's, only the loop is ours.
//!
//! Each part after the first starts `max_pattern_len - 1` bytes early, so that literals across a
//! cut are found, and keeps only the occurrences ending inside it; the parts' occurrences are
//! buffered and handed out part by part, in the order of the crate's overlapping search (by end,
//! then by pattern). Long texts go window by window, so the buffer stays small and on the stack;
//! a window whose occurrences overflow it is walked again in one lane, which needs no buffer.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, Match, MatchKind, PatternID};

/// Parts walked together.
const LANES: usize = 3;

/// Shortest part worth a lane: shorter texts are walked in one.
const MIN_PART: usize = 32;

/// Longest part of a window: a window is at most `LANES` times this.
const MAX_PART: usize = 256;

/// Occurrences a part can hold (prose has about one literal in 25 bytes).
const ROOM: usize = 48;

/// The literals of a rule set, compiled into one DFA.
#[derive(Debug)]
pub struct Literals {
    dfa: DFA,
    /// The unanchored start state.
    start: StateID,
    /// How many bytes early a part starts: the longest literal less one.
    overlap: usize,
}

impl Literals {
    /// Compiles `words`; overlapping occurrences (the standard match kind) are all reported, so a
    /// literal inside or across another is not hidden by it.
    pub fn new(words: &[Vec<u8>]) -> Result<Literals, String> {
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(words)
            .map_err(|e| format!("cannot build the word matcher ({e})"))?;
        let start = dfa
            .start_state(Anchored::No)
            .map_err(|e| format!("cannot build the word matcher ({e})"))?;
        Ok(Literals {
            overlap: dfa.max_pattern_len().saturating_sub(1),
            start,
            dfa,
        })
    }

    /// The automaton's size in bytes.
    #[cfg(test)]
    pub fn memory_usage(&self) -> usize {
        self.dfa.memory_usage()
    }

    /// Calls `found` with every occurrence of every literal in `text`, by end, then by pattern.
    pub fn each(&self, text: &[u8], mut found: impl FnMut(Match)) {
        // An empty literal occurs before the first byte too, which only the one-lane walk from
        // the start reports.
        if self.dfa.min_pattern_len() == 0 {
            self.walk(text, 0, text.len(), &mut found);
            return;
        }
        let mut from = 0;
        while from < text.len() {
            let to = text.len().min(from + LANES * MAX_PART);
            if !self.lanes(text, from, to, &mut found) {
                self.walk(text, from, to, &mut found);
            }
            from = to;
        }
    }

    /// The occurrences ending in `from + 1..=to`, from one walk starting early enough to see
    /// those that begin before `from`.
    fn walk(&self, text: &[u8], from: usize, to: usize, found: &mut impl FnMut(Match)) {
        let mut sid = self.start;
        let mut at = from.saturating_sub(self.overlap);
        if self.dfa.is_match(sid) && at == 0 {
            self.matches(sid, 0, found);
        }
        for &byte in text.get(at..to).unwrap_or_default() {
            sid = self.dfa.next_state(Anchored::No, sid, byte);
            at += 1;
            if self.dfa.is_special(sid) && at > from {
                self.matches(sid, at, found);
            }
        }
    }

    /// Reports the literals of match state `sid` ending at `end`.
    fn matches(&self, sid: StateID, end: usize, found: &mut impl FnMut(Match)) {
        if !self.dfa.is_match(sid) {
            return;
        }
        for i in 0..self.dfa.match_len(sid) {
            let pattern = self.dfa.match_pattern(sid, i);
            let start = end - self.dfa.pattern_len(pattern);
            found(Match::new(pattern, start..end));
        }
    }

    /// [`Literals::walk`] in [`LANES`] parts at once; false, having reported nothing, when the
    /// window is too short for lanes or a part's occurrences overflow the buffer.
    fn lanes(&self, text: &[u8], from: usize, to: usize, found: &mut impl FnMut(Match)) -> bool {
        let part = (to - from) / LANES;
        if part < MIN_PART.max(2 * self.overlap) || to > text.len() {
            return false;
        }
        // Part k keeps the occurrences ending in `first[k] + 1..=last[k]` and starts `overlap`
        // bytes before `first[k]` (the first part of the text excepted).
        let first: [usize; LANES] = std::array::from_fn(|k| from + k * part);
        let last: [usize; LANES] = std::array::from_fn(|k| {
            if k + 1 == LANES {
                to
            } else {
                from + (k + 1) * part
            }
        });
        let mut at: [usize; LANES] = std::array::from_fn(|k| first[k].saturating_sub(self.overlap));
        let mut sid = [self.start; LANES];
        let mut buffer = [(0u32, PatternID::ZERO); LANES * ROOM];
        let mut len = [0usize; LANES];
        // Notes the occurrences of lane `k`'s state; false when its room is full.
        let mut note = |k: usize, sid: StateID, end: usize, len: &mut [usize; LANES]| -> bool {
            if end <= first[k] || !self.dfa.is_match(sid) {
                return true;
            }
            for i in 0..self.dfa.match_len(sid) {
                if len[k] == ROOM {
                    return false;
                }
                // A window is far shorter than 4 GiB: its offsets fit.
                let Ok(offset) = u32::try_from(end - from) else {
                    return false;
                };
                buffer[k * ROOM + len[k]] = (offset, self.dfa.match_pattern(sid, i));
                len[k] += 1;
            }
            true
        };
        // In lockstep while every lane has bytes left, then each lane's remainder alone.
        let common = (0..LANES).map(|k| last[k] - at[k]).min().unwrap_or(0);
        for _ in 0..common {
            for k in 0..LANES {
                sid[k] = self.dfa.next_state(Anchored::No, sid[k], text[at[k]]);
                at[k] += 1;
                if self.dfa.is_special(sid[k]) && !note(k, sid[k], at[k], &mut len) {
                    return false;
                }
            }
        }
        for k in 0..LANES {
            while at[k] < last[k] {
                sid[k] = self.dfa.next_state(Anchored::No, sid[k], text[at[k]]);
                at[k] += 1;
                if self.dfa.is_special(sid[k]) && !note(k, sid[k], at[k], &mut len) {
                    return false;
                }
            }
        }
        for k in 0..LANES {
            for &(offset, pattern) in &buffer[k * ROOM..k * ROOM + len[k]] {
                let end = from + offset as usize;
                found(Match::new(
                    pattern,
                    end - self.dfa.pattern_len(pattern)..end,
                ));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Literals;
    use aho_corasick::{AhoCorasick, MatchKind};

    /// Every occurrence the crate's overlapping search reports, in its order.
    fn expected(words: &[Vec<u8>], text: &[u8]) -> Vec<(usize, usize, usize)> {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(words)
            .unwrap();
        ac.find_overlapping_iter(text)
            .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
            .collect()
    }

    fn found(words: &[Vec<u8>], text: &[u8]) -> Vec<(usize, usize, usize)> {
        let literals = Literals::new(words).unwrap();
        let mut all = Vec::new();
        literals.each(text, |m| {
            all.push((m.pattern().as_usize(), m.start(), m.end()))
        });
        all
    }

    #[test]
    fn lanes_report_what_one_walk_reports_in_its_order() {
        let words: Vec<Vec<u8>> = [
            "script", "cript", "ipt", "eval(", "<", "ignore", "ign", "e i",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect();
        let literals = Literals::new(&words).unwrap();
        // Texts of every length around the lane and window sizes, with literals across every
        // cut: a repeating text puts an occurrence on every boundary sooner or later. The dense
        // unit overflows a part's room (the one-lane walk), the sparse one does not (lanes).
        let dense = b"<script>eval(1)</script> ignore e i ".as_slice();
        let sparse = b"<script>eval(1)</script> and then plain words with nothing else in them \
            before the ignore e i and more prose after it "
            .as_slice();
        let mut laned = 0;
        for unit in [dense, sparse] {
            for len in (0..2000)
                .step_by(7)
                .chain([95, 96, 97, 767, 768, 769, 1536, 1537])
            {
                for skip in [0, 3, 5] {
                    // Shifted, so that cuts fall elsewhere in the unit.
                    let text: Vec<u8> = unit.iter().copied().cycle().skip(skip).take(len).collect();
                    assert_eq!(
                        found(&words, &text),
                        expected(&words, &text),
                        "length {len}"
                    );
                    let window = text.len().min(super::LANES * super::MAX_PART);
                    laned += usize::from(literals.lanes(&text, 0, window, &mut |_| {}));
                }
            }
        }
        assert!(laned > 200, "lanes walked only {laned} windows");
    }

    #[test]
    fn a_window_too_dense_for_the_buffer_is_walked_in_one_lane() {
        // Every byte is an occurrence of two literals: far more than a part's room.
        let words = vec![b"a".to_vec(), b"aa".to_vec()];
        let text = vec![b'a'; 3000];
        let all = found(&words, &text);
        assert_eq!(all.len(), 3000 + 2999);
        assert_eq!(all, expected(&words, &text));
    }

    #[test]
    fn an_empty_literal_is_found_at_every_position() {
        let words = vec![Vec::new(), b"ab".to_vec()];
        let text = b"ab".repeat(200);
        assert_eq!(found(&words, &text), expected(&words, &text));
    }
}
