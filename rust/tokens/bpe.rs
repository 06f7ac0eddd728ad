//! A compact byte-pair encoder that counts exactly what tiktoken's `encode_ordinary` counts.
//!
//! The vocabulary is one byte buffer, token `r` (its rank) at `bytes[starts[r]..starts[r + 1]]`, and an
//! open-addressing table of ranks keyed by the token's bytes: ~4 MB for o200k_base, where bpe-openai's encoder,
//! with its three Aho-Corasick automata, kept ~34 MB resident in every worker (loaded from a file; ~65 MB when
//! built from the copy embedded in the extension).
//!
//! A piece that is itself a token counts 1 after one lookup, which is most pieces of real text. Any other piece is
//! merged as tiktoken merges it (`_byte_pair_merge` in tiktoken's `src/lib.rs`): the adjacent pair whose
//! concatenation has the lowest rank first, the leftmost on ties, until no adjacent pair is a token. Short pieces
//! use tiktoken's own quadratic scan, the fastest for them; longer ones a heap over linked parts, O(n log n), so a
//! megabyte without whitespace costs milliseconds, not minutes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use sha2::{Digest, Sha256};

/// Rank of a span that is no token; also the table's empty slot.
const NONE: u32 = u32::MAX;
/// Pieces at least this long are merged with the heap; shorter ones with tiktoken's scan, whose parts then fit in
/// a buffer on the stack.
const LONG: usize = 128;

/// What makes a token list unusable as a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabularyError {
    /// A token with no bytes.
    Empty { rank: usize },
    /// The same bytes at two ranks.
    Duplicate { rank: usize, first: u32 },
    /// A byte that is not a token by itself: a piece holding it could not be encoded.
    MissingByte(u8),
    /// More tokens or bytes than 32-bit offsets can address.
    TooLarge,
    /// The serialized form is cut short, has the wrong header, or trailing bytes.
    Format(&'static str),
}

impl fmt::Display for VocabularyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { rank } => write!(f, "token {rank} is empty"),
            Self::Duplicate { rank, first } => write!(f, "token {rank} repeats token {first}"),
            Self::MissingByte(b) => write!(f, "byte {b:#04x} is not a token"),
            Self::TooLarge => f.write_str("more tokens or bytes than 32-bit offsets address"),
            Self::Format(why) => write!(f, "not a token vocabulary: {why}"),
        }
    }
}

impl std::error::Error for VocabularyError {}

/// Tokens by rank, and the ranks by bytes.
pub struct Vocabulary {
    bytes: Box<[u8]>,
    starts: Box<[u32]>,
    table: Box<[u32]>,
    /// `64 - log2(table.len())`: a slot is the hash's top bits.
    shift: u32,
    /// The longest token's length: a longer span needs no lookup.
    max_len: usize,
}

/// The serialized form's first bytes; the version is part of it.
const MAGIC: &[u8; 8] = b"WJTOK\x00\x00\x02";
/// The serialized form ends with the SHA-256 of everything before it.
const DIGEST_LEN: usize = 32;

impl Vocabulary {
    /// A vocabulary of `tokens`, ranked in the order given.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, VocabularyError> {
        let mut bytes = Vec::new();
        let mut starts = vec![0u32];
        for token in tokens {
            if token.is_empty() {
                return Err(VocabularyError::Empty { rank: starts.len() - 1 });
            }
            bytes.extend_from_slice(token);
            starts.push(u32::try_from(bytes.len()).map_err(|_| VocabularyError::TooLarge)?);
        }
        Self::from_parts(bytes.into_boxed_slice(), starts.into_boxed_slice())
    }

    fn from_parts(bytes: Box<[u8]>, starts: Box<[u32]>) -> Result<Self, VocabularyError> {
        let n = starts.len() - 1;
        if n >= NONE as usize {
            return Err(VocabularyError::TooLarge);
        }
        // At most half full, so that probe runs stay short whatever a client sends.
        let slots = (2 * n).max(16).next_power_of_two();
        let mut v = Self {
            bytes,
            starts,
            table: vec![NONE; slots].into_boxed_slice(),
            shift: 64 - slots.trailing_zeros(),
            max_len: 0,
        };
        let mask = slots - 1;
        for rank in 0..n as u32 {
            let token = v.token(rank);
            if token.is_empty() {
                return Err(VocabularyError::Empty { rank: rank as usize });
            }
            let mut slot = v.slot(token);
            loop {
                match v.table[slot] {
                    NONE => break,
                    other if v.token(other) == token => {
                        return Err(VocabularyError::Duplicate {
                            rank: rank as usize,
                            first: other,
                        });
                    }
                    _ => slot = (slot + 1) & mask,
                }
            }
            let len = token.len();
            v.table[slot] = rank;
            v.max_len = v.max_len.max(len);
        }
        if let Some(b) = (0..=255u8).find(|&b| v.rank(&[b]).is_none()) {
            return Err(VocabularyError::MissingByte(b));
        }
        Ok(v)
    }

    /// The serialized form: `MAGIC`, the token count and each token's length as little-endian u32, the tokens'
    /// bytes in rank order, then the SHA-256 of all that (a damaged file fails to load rather than count wrong).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 * (n + 1) + self.bytes.len() + DIGEST_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for pair in self.starts.windows(2) {
            out.extend_from_slice(&(pair[1] - pair[0]).to_le_bytes());
        }
        out.extend_from_slice(&self.bytes);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote, checking the digest and every length.
    pub fn from_bytes(data: &[u8]) -> Result<Self, VocabularyError> {
        let (body, digest) = data
            .split_at_checked(data.len().saturating_sub(DIGEST_LEN))
            .ok_or(VocabularyError::Format("cut short"))?;
        if digest.len() != DIGEST_LEN || Sha256::digest(body).as_slice() != digest {
            return Err(VocabularyError::Format("checksum mismatch: damaged or cut short"));
        }
        let rest = body
            .strip_prefix(MAGIC.as_slice())
            .ok_or(VocabularyError::Format("wrong header"))?;
        let (n, rest) = read_u32(rest).ok_or(VocabularyError::Format("no token count"))?;
        let n = n as usize;
        let lengths_len = n.checked_mul(4).ok_or(VocabularyError::TooLarge)?;
        let lengths = rest
            .get(..lengths_len)
            .ok_or(VocabularyError::Format("token lengths cut short"))?;
        let mut starts = Vec::with_capacity(n + 1);
        let mut end = 0u32;
        starts.push(end);
        for len in lengths.chunks_exact(4) {
            let (len, _) = read_u32(len).ok_or(VocabularyError::Format("token lengths cut short"))?;
            end = end.checked_add(len).ok_or(VocabularyError::TooLarge)?;
            starts.push(end);
        }
        let bytes = &rest[lengths_len..];
        if bytes.len() != end as usize {
            return Err(VocabularyError::Format("token bytes do not match their lengths"));
        }
        Self::from_parts(bytes.into(), starts.into_boxed_slice())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held: what a worker keeps resident for this vocabulary.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len() + 4 * (self.starts.len() + self.table.len())
    }

    /// The bytes of the token of rank `rank` (`rank < len()`).
    pub fn token(&self, rank: u32) -> &[u8] {
        let r = rank as usize;
        &self.bytes[self.starts[r] as usize..self.starts[r + 1] as usize]
    }

    /// The rank of the token whose bytes are `piece`.
    pub fn rank(&self, piece: &[u8]) -> Option<u32> {
        if piece.len() > self.max_len {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut slot = self.slot(piece);
        loop {
            match self.table[slot] {
                NONE => return None,
                rank if self.token(rank) == piece => return Some(rank),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    fn rank_or_none(&self, piece: &[u8]) -> u32 {
        self.rank(piece).unwrap_or(NONE)
    }

    fn slot(&self, piece: &[u8]) -> usize {
        (hash(piece) >> self.shift) as usize
    }

    /// Number of tokens tiktoken encodes `piece` into (one pre-tokenized piece, not a whole text).
    ///
    /// A piece of 4 GiB or more (only the Python API could pass one) is counted in 4 GiB parts, as the long merge
    /// keeps positions in 32 bits: an upper bound, off by at most one token per part.
    pub fn count(&self, piece: &[u8]) -> usize {
        self.count_in_parts(piece, u32::MAX as usize)
    }

    fn count_in_parts(&self, piece: &[u8], part: usize) -> usize {
        match piece.len() {
            0 => 0,
            1 => 1, // every byte is a token: checked when the vocabulary was built
            _ if self.rank(piece).is_some() => 1,
            n if n < LONG => self.merge_short(piece),
            n if n <= part => self.merge_long(piece),
            _ => piece.chunks(part).map(|p| self.count_in_parts(p, part)).sum(),
        }
    }

    /// tiktoken's scan: `parts[i]` is a part's start and the rank of it joined with the next part.
    fn merge_short(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        let mut parts = [(0u32, NONE); LONG + 1];
        for (i, part) in parts.iter_mut().enumerate().take(n + 1) {
            let rank = if i + 1 < n {
                self.rank_or_none(&piece[i..i + 2])
            } else {
                NONE
            };
            *part = (i as u32, rank);
        }
        let mut len = n + 1;
        // The rank of parts i and i + 1 joined once part i + 1 is merged into i: the span up to parts[i + 3].
        let joined = |parts: &[(u32, u32)], len: usize, i: usize| {
            if i + 3 < len {
                self.rank_or_none(&piece[parts[i].0 as usize..parts[i + 3].0 as usize])
            } else {
                NONE
            }
        };
        loop {
            let mut min = (NONE, 0);
            for (i, &(_, rank)) in parts[..len - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, i);
                }
            }
            if min.0 == NONE {
                return len - 1;
            }
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = joined(&parts, len, i - 1);
            }
            parts[i].1 = joined(&parts, len, i);
            parts.copy_within(i + 2..len, i + 1);
            len -= 1;
        }
    }

    /// The same merges for long pieces: parts linked by their starts, candidate pairs in a min-heap by (rank,
    /// start), entries gone stale (their pair changed or their part was merged away) skipped when popped.
    fn merge_long(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        // next[s]: the start of the part after the one at s (n after the last); prev[s] the one before.
        let mut next: Vec<u32> = (1..=n as u32).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|s| s.wrapping_sub(1)).collect();
        // pair[s]: the rank of the part at s joined with the next one; NONE when that is no token, when the part is
        // the last, or when it was merged away.
        let mut pair = vec![NONE; n];
        // Entries are (rank, start) packed into one u64, so the order is by rank, then leftmost.
        let entry = |rank: u32, s: usize| Reverse((u64::from(rank) << 32) | s as u64);
        let mut initial = Vec::with_capacity(n);
        for s in 0..n - 1 {
            pair[s] = self.rank_or_none(&piece[s..s + 2]);
            if pair[s] != NONE {
                initial.push(entry(pair[s], s));
            }
        }
        let mut heap = BinaryHeap::from(initial); // built in O(n)
        let mut parts = n;
        while let Some(Reverse(packed)) = heap.pop() {
            let (rank, s) = ((packed >> 32) as u32, (packed & 0xffff_ffff) as usize);
            if pair[s] != rank {
                continue; // every change makes a pair's span longer, so its rank differs: this entry is stale
            }
            let absorbed = next[s] as usize;
            let after = next[absorbed] as usize;
            next[s] = after as u32;
            if after < n {
                prev[after] = s as u32;
            }
            pair[absorbed] = NONE;
            parts -= 1;
            pair[s] = if after < n {
                self.rank_or_none(&piece[s..next[after] as usize])
            } else {
                NONE
            };
            if pair[s] != NONE {
                heap.push(entry(pair[s], s));
            }
            if s > 0 {
                let p = prev[s] as usize;
                pair[p] = self.rank_or_none(&piece[p..after]);
                if pair[p] != NONE {
                    heap.push(entry(pair[p], p));
                }
            }
        }
        parts
    }
}

fn read_u32(data: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = data.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// FxHash over 8-byte words (rustc's hash), seeded with the length. The table is fixed and a probe compares bytes,
/// so a client choosing colliding pieces gains at most the table's longest run per lookup.
fn hash(piece: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut h = (piece.len() as u64).wrapping_mul(K);
    let mut words = piece.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h.rotate_left(26) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h = (h.rotate_left(26) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// Every byte, then merges of a tiny alphabet, ranked as listed.
    fn toy() -> Vocabulary {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for t in ["ab", "bc", "abc", "cd", "bcd", "aa", "aaaa", "dd", "abcd"] {
            tokens.push(t.as_bytes().to_vec());
        }
        Vocabulary::new(tokens.iter().map(Vec::as_slice)).expect("a valid vocabulary")
    }

    /// tiktoken's algorithm as written there, on a Vec, for any length: the reference for both merges.
    fn reference(v: &Vocabulary, piece: &[u8]) -> usize {
        if piece.len() < 2 || v.rank(piece).is_some() {
            return piece.len().min(1);
        }
        let mut parts: Vec<(usize, u32)> = (0..=piece.len())
            .map(|i| {
                (
                    i,
                    if i + 1 < piece.len() {
                        v.rank_or_none(&piece[i..i + 2])
                    } else {
                        NONE
                    },
                )
            })
            .collect();
        let get = |parts: &Vec<(usize, u32)>, i: usize| {
            if i + 3 < parts.len() {
                v.rank_or_none(&piece[parts[i].0..parts[i + 3].0])
            } else {
                NONE
            }
        };
        while let Some((i, &(_, rank))) = parts[..parts.len() - 1]
            .iter()
            .enumerate()
            .min_by_key(|(i, (_, r))| (*r, *i))
        {
            if rank == NONE {
                break;
            }
            if i > 0 {
                parts[i - 1].1 = get(&parts, i - 1);
            }
            parts[i].1 = get(&parts, i);
            parts.remove(i + 1);
        }
        parts.len() - 1
    }

    #[test]
    fn lookups_find_every_token_and_nothing_else() {
        let v = toy();
        for rank in 0..v.len() as u32 {
            assert_eq!(v.rank(v.token(rank)), Some(rank));
        }
        assert_eq!(v.rank(b"ba"), None);
        assert_eq!(v.rank(b"abcde"), None);
        assert_eq!(v.rank(b""), None);
    }

    #[test]
    fn merges_lowest_rank_first_leftmost_on_ties() {
        let v = toy();
        // "abcd": ab(256) beats bc(257): ab|c|d, then cd(259): ab|cd, and "abcd" is itself a token.
        assert_eq!(v.count(b"abcd"), 1);
        // "abcda": ab, cd -> ab|cd|a -> abcd|a.
        assert_eq!(v.count(b"abcda"), 2);
        // "aaa": aa at 0 and at 1 tie; the leftmost wins: aa|a.
        assert_eq!(v.count(b"aaa"), 2);
        assert_eq!(v.count(b"aaaaa"), 2); // aa|aa|a -> aaaa|a
        assert_eq!(v.count(b"xyz"), 3);
        assert_eq!(v.count(b""), 0);
        assert_eq!(v.count(b"\xff"), 1);
    }

    #[test]
    fn short_and_long_merges_agree_with_tiktoken_on_random_pieces() {
        let v = toy();
        let mut next = crate::tokens::tests::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..3000 {
            let len = (next() % 300) as usize;
            let piece: Vec<u8> = (0..len).map(|_| b"abcdx"[(next() % 5) as usize]).collect();
            let want = reference(&v, &piece);
            assert_eq!(v.count(&piece), want, "{:?}", String::from_utf8_lossy(&piece));
            if piece.len() >= 2 && v.rank(&piece).is_none() {
                assert_eq!(
                    v.merge_long(&piece),
                    want,
                    "heap: {:?}",
                    String::from_utf8_lossy(&piece)
                );
                if piece.len() < LONG {
                    assert_eq!(v.merge_short(&piece), want);
                }
            }
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let v = toy();
        let back = Vocabulary::from_bytes(&v.to_bytes()).expect("its own bytes");
        assert_eq!(back.len(), v.len());
        for rank in 0..v.len() as u32 {
            assert_eq!(back.token(rank), v.token(rank));
        }
    }

    #[test]
    fn rejects_bad_vocabularies_and_bad_bytes() {
        let bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let with =
            |extra: &[&[u8]]| Vocabulary::new(bytes.iter().map(Vec::as_slice).chain(extra.iter().copied())).err();
        assert_eq!(with(&[b"ab", b""]), Some(VocabularyError::Empty { rank: 257 }));
        assert_eq!(
            with(&[b"ab", b"ab"]),
            Some(VocabularyError::Duplicate { rank: 257, first: 256 })
        );
        assert_eq!(
            Vocabulary::new(bytes[1..].iter().map(Vec::as_slice)).err(),
            Some(VocabularyError::MissingByte(0))
        );
        let good = toy().to_bytes();
        for cut in [0, 5, 8, 11, 20, good.len() - 1] {
            assert!(Vocabulary::from_bytes(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(b'x');
        assert!(matches!(
            Vocabulary::from_bytes(&longer),
            Err(VocabularyError::Format(_))
        ));
        // Lengths that do not add up, under a valid checksum.
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - DIGEST_LEN);
            let digest = Sha256::digest(&body);
            body.extend_from_slice(&digest);
            body
        };
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // first token's length
        assert!(matches!(
            Vocabulary::from_bytes(&reseal(huge)),
            Err(VocabularyError::Format(_) | VocabularyError::TooLarge)
        ));
        let mut many = good.clone();
        many[8..12].copy_from_slice(&u32::MAX.to_le_bytes()); // token count
        assert_eq!(
            Vocabulary::from_bytes(&reseal(many)).err(),
            Some(VocabularyError::Format("token lengths cut short"))
        );
        // One token's byte changed (to one no other token has, so the vocabulary itself would still be valid).
        let mut flipped = good;
        let at = flipped.len() - DIGEST_LEN - 1;
        flipped[at] ^= 0x80;
        assert_eq!(
            Vocabulary::from_bytes(&flipped).err(),
            Some(VocabularyError::Format("checksum mismatch: damaged or cut short"))
        );
    }

    #[test]
    fn pieces_longer_than_a_part_are_counted_part_by_part() {
        let v = toy();
        let piece = b"abcd".repeat(100); // 400 bytes: "abcd" is a token, so 100 tokens exactly
        assert_eq!(v.count(&piece), 100);
        assert_eq!(v.count_in_parts(&piece, 200), 100); // parts on token boundaries: exact
        assert_eq!(
            v.count_in_parts(&piece, 198),
            v.count(&piece[..198]) + v.count(&piece[198..396]) + 1
        );
    }
}
