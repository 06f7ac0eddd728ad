//! Exact, offline token counting compatible with tiktoken's `o200k_base` and `cl100k_base`.
//!
//! The engine is `bpe-openai` (github/rust-gems): the vocabularies are compiled into the binary, so counting never
//! touches the network, and its backtracking encoder stays linear on adversarial input (long runs without
//! whitespace), where tiktoken grows quadratically. Counts are equal to tiktoken's `encode_ordinary`: special-token
//! text such as `<|endoftext|>` inside user content is counted as ordinary text, never as a special token.
//!
//! The encoders are built once per process on first use; each costs tens of MB and tens of milliseconds, so only
//! the encodings in use are built: the gateway warms up the ones its configured models map to at start-up
//! (`count_tokens("", encoding)` from Python). When [`set_data_dir`] names a directory holding
//! `<encoding>.bpe` (written by `tools/dump_token_data.rs`), the encoder is deserialized from that file;
//! otherwise from the copy bpe-openai embeds in the binary, whose 32 MB (o200k_base) then stay resident as
//! pages of the extension. Either way the data and the pre-tokenization patterns are bpe-openai's own.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bpe_openai::Tokenizer;
use bpe_openai::byte_pair_encoding::BytePairEncoding;

/// A supported encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, TokenError> {
        match name {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            _ => Err(TokenError::UnknownEncoding(name.to_owned())),
        }
    }

    fn tokenizer(self) -> &'static Tokenizer {
        let (cell, embedded): (&OnceLock<Loaded>, fn() -> &'static Tokenizer) = match self {
            Self::O200kBase => (&O200K, bpe_openai::o200k_base),
            Self::Cl100kBase => (&CL100K, bpe_openai::cl100k_base),
        };
        let loaded = cell.get_or_init(|| match DATA_DIR.get() {
            Some(dir) => match load_file(self, dir) {
                Ok(tokenizer) => Loaded::File(Box::new(tokenizer)),
                Err(e) => Loaded::Embedded(e),
            },
            None => Loaded::Embedded("no data directory set".to_owned()),
        });
        match loaded {
            Loaded::File(tokenizer) => tokenizer,
            Loaded::Embedded(_) => embedded(),
        }
    }

    /// Where this encoding's data came from: `"file"`, or `"embedded: <why the file was not used>"`; `None`
    /// before it was first used.
    pub fn source(self) -> Option<String> {
        let cell = match self {
            Self::O200kBase => &O200K,
            Self::Cl100kBase => &CL100K,
        };
        cell.get().map(|loaded| match loaded {
            Loaded::File(_) => "file".to_owned(),
            Loaded::Embedded(why) => format!("embedded: {why}"),
        })
    }
}

enum Loaded {
    File(Box<Tokenizer>),
    Embedded(String),
}

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();
static O200K: OnceLock<Loaded> = OnceLock::new();
static CL100K: OnceLock<Loaded> = OnceLock::new();

/// Load encoders from `<dir>/<encoding>.bpe` from now on; false when a directory was already set (the first
/// one stays: an encoder may already be built from it).
pub fn set_data_dir(dir: &Path) -> bool {
    DATA_DIR.set(dir.to_path_buf()).is_ok()
}

// bpe-openai's pre-tokenization patterns (src/lib.rs of bpe-openai 0.3), which it applies to its embedded data;
// the negative look-ahead `\s+(?!\S)` is rewritten as a one-character pseudo look-ahead, as there.
const CL100K_PAT1: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+$";
const O200K_PAT1: [&str; 6] = [
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "\\p{N}{1,3}",
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
    "\\s*[\\r\\n]+",
    "\\s+$",
];

fn load_file(encoding: Encoding, dir: &Path) -> Result<Tokenizer, String> {
    let path = dir.join(format!("{}.bpe", encoding.name()));
    // Read into a buffer that is freed once the encoder is built: only the encoder stays resident.
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bpe: BytePairEncoding = rmp_serde::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    drop(bytes);
    let o200k = O200K_PAT1.join("|");
    let pat1 = match encoding {
        Encoding::O200kBase => o200k.as_str(),
        Encoding::Cl100kBase => CL100K_PAT1,
    };
    Tokenizer::new_lookahead(bpe, &[(pat1, false), ("\\s+\\s", true), ("\\s+", false)], false)
        .map_err(|e| format!("pre-tokenization pattern: {e}"))
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    UnknownEncoding(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEncoding(name) => {
                write!(
                    f,
                    "unknown encoding {name:?}: expected \"o200k_base\" or \"cl100k_base\""
                )
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// Number of tokens of `text`, with ordinary semantics (no special tokens).
pub fn count(encoding: Encoding, text: &str) -> usize {
    encoding.tokenizer().count(text)
}

/// The encoding that `model` uses.
///
/// The name is matched case-insensitively after dropping a routing prefix (`openai/gpt-4o`, `azure/...`) and a
/// fine-tune prefix (`ft:`). GPT-4o, GPT-4.1, GPT-4.5, GPT-5, gpt-oss and the o-series use `o200k_base`; GPT-4,
/// GPT-3.5 and the OpenAI embedding models use `cl100k_base`. Every other model (Claude, Llama, Mistral, unknown
/// names) falls back to `o200k_base`: its tokenizer is not public or not supported here, so the count is an
/// estimate, not an exact figure.
pub fn encoding_for_model(model: &str) -> Encoding {
    let model = model.trim();
    let model = model.rsplit('/').next().unwrap_or(model);
    let model = model.strip_prefix("ft:").unwrap_or(model).to_ascii_lowercase();
    let m = model.as_str();
    let family = |prefix: &str| m == prefix || m.starts_with(&format!("{prefix}-"));
    const O200K: [&str; 6] = ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss"];
    if O200K.iter().any(|p| m.starts_with(p)) || ["o1", "o3", "o4"].iter().any(|p| family(p)) {
        return Encoding::O200kBase;
    }
    const CL100K: [&str; 5] = [
        "gpt-4",
        "gpt-3.5",
        "gpt-35",
        "text-embedding-ada-002",
        "text-embedding-3",
    ];
    if CL100K.iter().any(|p| m.starts_with(p)) {
        return Encoding::Cl100kBase;
    }
    Encoding::O200kBase
}

/// Per-message token overhead of the chat format, from the OpenAI Cookbook notebook
/// "How to count tokens with tiktoken" (`num_tokens_from_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOverhead {
    /// Added for every message (`<|start|>{role/name}\n{content}<|end|>\n`).
    pub per_message: i64,
    /// Added when a message has a `name`.
    pub per_name: i64,
    /// Added once: every reply is primed with `<|start|>assistant<|message|>`.
    pub reply_priming: i64,
}

impl ChatOverhead {
    /// The cookbook's figures for every current chat model.
    pub const DEFAULT: Self = Self {
        per_message: 3,
        per_name: 1,
        reply_priming: 3,
    };
    /// `gpt-3.5-turbo-0301` used a different template.
    pub const GPT35_0301: Self = Self {
        per_message: 4,
        per_name: -1,
        reply_priming: 3,
    };

    pub fn for_model(model: &str) -> Self {
        if model.to_ascii_lowercase().contains("gpt-3.5-turbo-0301") {
            Self::GPT35_0301
        } else {
            Self::DEFAULT
        }
    }
}

/// One chat message as counted: every string the cookbook encodes (role, content, and the optional name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub name: Option<&'a str>,
}

/// Prompt tokens of a chat request for `model`: the cookbook's `num_tokens_from_messages`.
///
/// Message contents of at least [`CACHE_MIN_BYTES`] (64) go through the process-wide [`CountCache`]: a chat request
/// resends its system prompt and the whole history on every turn, so most of its text was counted before.
pub fn count_chat(model: &str, messages: &[ChatMessage<'_>]) -> usize {
    let encoding = encoding_for_model(model);
    let overhead = ChatOverhead::for_model(model);
    let cache = CountCache::global();
    let mut total = overhead.reply_priming;
    for message in messages {
        total += overhead.per_message;
        total += count(encoding, message.role) as i64;
        total += cache.count(encoding, message.content) as i64;
        if let Some(name) = message.name {
            total += count(encoding, name) as i64 + overhead.per_name;
        }
    }
    usize::try_from(total).unwrap_or(0)
}

/// Texts shorter than this are counted directly: hashing and locking would cost about as much.
pub const CACHE_MIN_BYTES: usize = 64;
/// Entries per generation; at most twice this many are kept (about 40 bytes each).
const CACHE_GENERATION: usize = 4096;

/// Token counts of recently seen texts, keyed by two independent SipHash-1-3 digests with per-process random
/// keys (the DoS-resistant PRF std's `HashMap` uses) plus the text's length and encoding. A wrong hit needs a
/// 128-bit collision of a secret-keyed PRF between two texts of the same length: not something a client can
/// arrange. Eviction is by generation: when the current map is full it becomes the previous one and the older
/// one is dropped; a hit in the previous generation moves the entry forward. Bounded memory, O(1) per lookup.
pub struct CountCache {
    keys: (RandomState, RandomState),
    maps: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<CacheKey, u32>,
    previous: HashMap<CacheKey, u32>,
    hits: u64,
    misses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    digest: (u64, u64),
    len: usize,
    encoding: Encoding,
}

impl Default for CountCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CountCache {
    pub fn new() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            maps: Mutex::new(Generations::default()),
        }
    }

    /// The one cache of the process.
    pub fn global() -> &'static Self {
        static CACHE: OnceLock<CountCache> = OnceLock::new();
        CACHE.get_or_init(Self::new)
    }

    /// `count(encoding, text)`, from the cache when this text was counted recently.
    pub fn count(&self, encoding: Encoding, text: &str) -> usize {
        if text.len() < CACHE_MIN_BYTES {
            return count(encoding, text);
        }
        let key = CacheKey {
            digest: (self.keys.0.hash_one(text), self.keys.1.hash_one(text)),
            len: text.len(),
            encoding,
        };
        if let Some(n) = self.lookup(&key) {
            return n as usize;
        }
        let n = count(encoding, text); // outside the lock: other threads keep counting meanwhile
        let mut g = self.lock();
        g.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        n
    }

    /// (hits, misses) since the process started.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.lock();
        (g.hits, g.misses)
    }

    fn lookup(&self, key: &CacheKey) -> Option<u32> {
        let mut g = self.lock();
        if let Some(&n) = g.current.get(key) {
            g.hits += 1;
            return Some(n);
        }
        if let Some(n) = g.previous.remove(key) {
            g.hits += 1;
            g.insert(*key, n);
            return Some(n);
        }
        g.misses += 1;
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves the maps consistent (plain inserts): keep using them.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Generations {
    fn insert(&mut self, key: CacheKey, n: u32) {
        if self.current.len() >= CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, n);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varied_corpus() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "Hello, world!",
            "The quick brown fox jumps over the lazy dog. It's 3:45pm; we'll see, they've said, I'd rather not.",
            "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n",
            "def f(x):\n\treturn {'a': [1, 2.5e-3, None]}  # comment\n\n\n",
            "{\"id\":\"chatcmpl-123\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"created\":1712345678}",
            "Ünïcödé façade naïve café — «quotes» ‘single’ “double”",
            "日本語のテキストです。東京は日本の首都です。",
            "中文文本，包含标点符号。数字１２３",
            "한국어 텍스트입니다. 안녕하세요!",
            "Русский текст с цифрами 12345 и знаками!",
            "العربية نص مع أرقام ١٢٣",
            "हिन्दी पाठ, देवनागरी लिपि",
            "emoji 😀🎉👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽",
            "   leading and trailing spaces   ",
            "tabs\t\t\tand\n\n\nnewlines\r\n\r\nmixed \u{a0}nbsp\u{2028}ls",
            "<|endoftext|> is not special here <|fim_prefix|>",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "1234567890123456789 3.14159 0xDEADBEEF 1e10",
            "CamelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case",
            "https://example.com/path?query=1&b=2#frag user@example.org",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(" ".repeat(1000));
        v.push("\n".repeat(300) + "x" + &" \n".repeat(200));
        v.push(v[2..16].concat().repeat(20));
        v
    }

    #[test]
    fn parity_with_tiktoken_rs_o200k() {
        let reference = tiktoken_rs::o200k_base_singleton();
        for text in varied_corpus() {
            assert_eq!(
                count(Encoding::O200kBase, &text),
                reference.encode_ordinary(&text).len(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parity_with_tiktoken_rs_cl100k() {
        let reference = tiktoken_rs::cl100k_base_singleton();
        for text in varied_corpus() {
            assert_eq!(
                count(Encoding::Cl100kBase, &text),
                reference.encode_ordinary(&text).len(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parity_on_100kb_adversarial_run() {
        let text = "x".repeat(100 * 1024);
        let reference = tiktoken_rs::o200k_base_singleton();
        assert_eq!(
            count(Encoding::O200kBase, &text),
            reference.encode_ordinary(&text).len()
        );
    }

    #[test]
    fn one_megabyte_runs_are_counted() {
        // bpe-openai is linear here; tiktoken's quadratic worst case would make this test crawl.
        for ch in ["a", " ", "é", "7", "\u{1F600}"] {
            let text = ch.repeat((1 << 20) / ch.len());
            let n = count(Encoding::O200kBase, &text);
            assert!(n > 0 && n <= text.len(), "{ch:?}: {n}");
        }
    }

    #[test]
    fn known_counts() {
        assert_eq!(count(Encoding::Cl100kBase, "hello world"), 2);
        assert_eq!(count(Encoding::O200kBase, "hello world"), 2);
        assert_eq!(count(Encoding::O200kBase, ""), 0);
    }

    #[test]
    fn encodings_by_name() {
        assert_eq!(Encoding::from_name("o200k_base"), Ok(Encoding::O200kBase));
        assert_eq!(Encoding::from_name("cl100k_base"), Ok(Encoding::Cl100kBase));
        assert!(Encoding::from_name("p50k_base").is_err());
        assert_eq!(Encoding::Cl100kBase.to_string(), "cl100k_base");
    }

    #[test]
    fn model_to_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "o1",
            "o1-mini",
            "o3-mini",
            "o4-mini",
            "gpt-4.1-nano",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-5",
            "GPT-5-mini",
            "openai/gpt-4o",
            "ft:gpt-4o-2024-08-06:org::id",
            "chatgpt-4o-latest",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "azure/gpt-35-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::Cl100kBase, "{m}");
        }
        for m in [
            "claude-3-5-sonnet",
            "llama-3.1-70b",
            "mistral-large",
            "o10-x",
            "",
            "o3x",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::O200kBase, "{m}");
        }
    }

    #[test]
    fn chat_overhead_matches_cookbook() {
        // Cookbook example: the reference for gpt-4o-class models is 3 per message, +1 per name, +3 priming.
        let msgs = [
            ChatMessage {
                role: "system",
                content: "You are a helpful assistant.",
                name: None,
            },
            ChatMessage {
                role: "user",
                content: "Hello!",
                name: Some("alice"),
            },
        ];
        let enc = Encoding::O200kBase;
        let want = 3
            + (3 + count(enc, "system") + count(enc, "You are a helpful assistant."))
            + (3 + count(enc, "user") + count(enc, "Hello!") + count(enc, "alice") + 1);
        assert_eq!(count_chat("gpt-4o", &msgs), want);
        assert_eq!(count_chat("gpt-4o", &[]), 3);
    }

    #[test]
    fn cache_gives_the_same_counts_and_hits_on_repeats() {
        let cache = CountCache::new();
        let texts: Vec<String> = varied_corpus()
            .into_iter()
            .filter(|t| t.len() >= CACHE_MIN_BYTES)
            .collect();
        assert!(texts.len() >= 2);
        for _ in 0..3 {
            for t in &texts {
                for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
                    assert_eq!(cache.count(enc, t), count(enc, t));
                }
            }
        }
        let (hits, misses) = cache.stats();
        assert_eq!(misses, 2 * texts.len() as u64);
        assert_eq!(hits, 4 * texts.len() as u64);
        // Short texts never enter the cache.
        assert_eq!(cache.count(Encoding::O200kBase, "Hello, world!"), 4);
        assert_eq!(cache.stats(), (hits, misses));
    }

    #[test]
    fn cache_is_bounded_and_keeps_what_is_still_used() {
        let cache = CountCache::new();
        let base = "word ".repeat(60);
        let hot = format!("{base} the system prompt every request sends");
        for i in 0..(3 * CACHE_GENERATION) {
            let t = format!("{base} {i}");
            assert_eq!(cache.count(Encoding::O200kBase, &t), count(Encoding::O200kBase, &t));
            cache.count(Encoding::O200kBase, &hot);
        }
        assert!(cache.lock().len() <= 2 * CACHE_GENERATION);
        let (_, misses) = cache.stats();
        assert_eq!(misses, 3 * CACHE_GENERATION as u64 + 1); // the hot text was counted once
    }

    #[test]
    fn chat_counts_are_the_same_with_the_cache() {
        let corpus = varied_corpus();
        let messages: Vec<ChatMessage<'_>> = corpus
            .iter()
            .map(|c| ChatMessage {
                role: "user",
                content: c,
                name: None,
            })
            .collect();
        let uncached: i64 = 3 + messages
            .iter()
            .map(|m| 3 + count(Encoding::O200kBase, m.role) as i64 + count(Encoding::O200kBase, m.content) as i64)
            .sum::<i64>();
        for _ in 0..2 {
            assert_eq!(count_chat("gpt-4o", &messages) as i64, uncached);
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn encoders_loaded_from_dumped_files_count_like_the_embedded_ones() {
        let dir = std::env::temp_dir().join(format!("workjet-token-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = varied_corpus();
        for (encoding, embedded) in [
            (Encoding::O200kBase, bpe_openai::o200k_base()),
            (Encoding::Cl100kBase, bpe_openai::cl100k_base()),
        ] {
            let path = dir.join(format!("{}.bpe", encoding.name()));
            std::fs::write(&path, rmp_serde::to_vec(&embedded.bpe).unwrap()).unwrap();
            let loaded = load_file(encoding, &dir).unwrap();
            for text in &corpus {
                assert_eq!(
                    loaded.count(text.as_str()),
                    embedded.count(text.as_str()),
                    "{encoding}: {text:?}"
                );
            }
        }
        std::fs::write(dir.join("o200k_base.bpe"), b"not messagepack").unwrap();
        let err = load_file(Encoding::O200kBase, &dir).err().unwrap();
        assert!(err.contains("o200k_base.bpe"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
