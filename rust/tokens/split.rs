//! Pre-tokenization: the pieces tiktoken's regex cuts a text into before byte-pair merging.
//!
//! tiktoken's patterns use a negative look-ahead (`\s+(?!\S)`), which a finite automaton cannot run. As in
//! bpe-openai (`src/lib.rs` of bpe-openai 0.3, whose patterns and this rewrite are taken from there), it becomes
//! several patterns tried as one leftmost-first search, where a pattern marked "look-ahead" matches one character
//! more than it keeps: `\s+\s` keeps all but the last whitespace character, as `\s+(?!\S)` would.

use regex_automata::meta::{BuildError, Regex};
use regex_automata::{Anchored, Input};

/// Splits text into the pieces a byte-pair encoder counts.
pub struct Splitter {
    pattern: Regex,
    lookahead: Vec<bool>,
}

impl Splitter {
    /// `patterns` in priority order, each with whether its last character is a look-ahead.
    pub fn new(patterns: &[(&str, bool)]) -> Result<Self, Box<BuildError>> {
        let (pats, lookahead): (Vec<&str>, Vec<bool>) = patterns.iter().copied().unzip();
        let pattern = Regex::new_many(&pats).map_err(Box::new)?;
        Ok(Self { pattern, lookahead })
    }

    /// The pieces of `text`, in order; together they are all of it.
    pub fn split<'a>(&'a self, text: &'a str) -> Pieces<'a> {
        Pieces {
            splitter: self,
            text,
            at: 0,
        }
    }
}

pub struct Pieces<'a> {
    splitter: &'a Splitter,
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.at..];
        if rest.is_empty() {
            return None;
        }
        let input = Input::new(rest).anchored(Anchored::Yes);
        let mut end = match self.splitter.pattern.find(input) {
            Some(m) => {
                let mut end = m.end();
                if self
                    .splitter
                    .lookahead
                    .get(m.pattern().as_usize())
                    .copied()
                    .unwrap_or(false)
                {
                    end -= rest[..end].chars().next_back().map_or(0, char::len_utf8);
                }
                end
            }
            None => 0,
        };
        if end == 0 {
            // The patterns match every character, so this is unreachable for the encodings here; were it reached,
            // the rest is one piece rather than a text that silently counts short.
            end = rest.len();
        }
        self.at += end;
        Some(&rest[..end])
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn lookahead_keeps_the_last_whitespace_for_the_next_piece() {
        let s = Splitter::new(&[("[a-z]+| ?[a-z]+", false), ("\\s+\\s", true), ("\\s+", false)]).expect("patterns");
        let pieces: Vec<&str> = s.split("ab   cd ").collect();
        assert_eq!(pieces, ["ab", "  ", " cd", " "]);
    }

    #[test]
    fn pieces_cover_the_text_even_where_no_pattern_matches() {
        let s = Splitter::new(&[("[a-z]+", false)]).expect("patterns");
        assert_eq!(s.split("ab!").collect::<Vec<_>>(), ["ab", "!"]);
        assert_eq!(s.split("").count(), 0);
    }
}
