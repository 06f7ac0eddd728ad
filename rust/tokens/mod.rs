//! Exact, offline token counting compatible with tiktoken's `o200k_base` and `cl100k_base`.
//!
//! Counts are equal to tiktoken's `encode_ordinary`: special-token text such as `<|endoftext|>` inside user content
//! is counted as ordinary text, never as a special token. An [`Encoder`] is tiktoken's pre-tokenization
//! ([`split`]) and a compact vocabulary with tiktoken's merge order ([`bpe`]): ~6 MB resident for o200k_base
//! (the vocabulary ~4 MB, the pre-tokenizer's automaton and caches the rest).
//!
//! The vocabularies are OpenAI's, as bpe-openai (github/rust-gems) embeds them. `tools/dump_token_data.rs` writes
//! them to `<encoding>.tokens` files (the Makefile does, before every build), and [`set_data_dir`] names the
//! directory to load them from. Without a file, counting falls back to bpe-openai's own encoder built from the
//! copy embedded in the binary: the same counts, but ~65 MB stay resident for o200k_base. Either way an encoder is
//! built once per process on first use, so only the encodings in use cost memory: the gateway warms up the ones
//! its configured models map to at start-up (`count_tokens("", encoding)` from Python).

pub mod bpe;
mod cache;
pub mod split;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use cache::{CACHE_MIN_BYTES, CountCache};

use bpe::Vocabulary;
use split::Splitter;

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

    fn cell(self) -> &'static OnceLock<Loaded> {
        match self {
            Self::O200kBase => &O200K,
            Self::Cl100kBase => &CL100K,
        }
    }

    fn loaded(self) -> &'static Loaded {
        self.cell().get_or_init(|| match DATA_DIR.get() {
            Some(dir) => match load_file(self, dir) {
                Ok(encoder) => Loaded::File(Box::new(encoder)),
                Err(e) => Loaded::Embedded(e),
            },
            None => Loaded::Embedded("no data directory set".to_owned()),
        })
    }

    /// Number of tokens in this encoding's vocabulary, special tokens aside.
    pub fn tokens(self) -> usize {
        match self {
            Self::O200kBase => 199_998,
            Self::Cl100kBase => 100_256,
        }
    }

    fn embedded(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Self::O200kBase => bpe_openai::o200k_base(),
            Self::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }

    /// Where this encoding's data came from: `"file"`, or `"embedded: <why the file was not used>"`; `None`
    /// before it was first used.
    pub fn source(self) -> Option<String> {
        self.cell().get().map(|loaded| match loaded {
            Loaded::File(_) => "file".to_owned(),
            Loaded::Embedded(why) => format!("embedded: {why}"),
        })
    }

    /// tiktoken's pre-tokenization for this encoding, as bpe-openai 0.3 (`src/lib.rs`) writes it for an automaton:
    /// `\s+(?!\S)` becomes the look-ahead pattern `\s+\s`.
    fn splitter(self) -> Result<Splitter, String> {
        let o200k = O200K_PAT1.join("|");
        let pat1 = match self {
            Self::O200kBase => o200k.as_str(),
            Self::Cl100kBase => CL100K_PAT1,
        };
        Splitter::new(&[(pat1, false), ("\\s+\\s", true), ("\\s+", false)])
            .map_err(|e| format!("pre-tokenization pattern: {e}"))
    }
}

enum Loaded {
    File(Box<Encoder>),
    Embedded(String),
}

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();
static O200K: OnceLock<Loaded> = OnceLock::new();
static CL100K: OnceLock<Loaded> = OnceLock::new();

/// Load encoders from `<dir>/<encoding>.tokens` from now on; false when a directory was already set (the first
/// one stays: an encoder may already be built from it).
pub fn set_data_dir(dir: &Path) -> bool {
    DATA_DIR.set(dir.to_path_buf()).is_ok()
}

const CL100K_PAT1: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+$";
const O200K_PAT1: [&str; 6] = [
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "\\p{N}{1,3}",
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
    "\\s*[\\r\\n]+",
    "\\s+$",
];

/// One encoding's counter: pre-tokenization, then byte-pair merges piece by piece.
pub struct Encoder {
    splitter: Splitter,
    vocabulary: Vocabulary,
}

impl Encoder {
    /// The encoder of `encoding` over `vocabulary`.
    pub fn new(encoding: Encoding, vocabulary: Vocabulary) -> Result<Self, String> {
        Ok(Self {
            splitter: encoding.splitter()?,
            vocabulary,
        })
    }

    /// Number of tokens of `text`, with ordinary semantics.
    pub fn count(&self, text: &str) -> usize {
        self.splitter
            .split(text)
            .map(|piece| self.vocabulary.count(piece.as_bytes()))
            .sum()
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }
}

/// The vocabulary of `encoding` as bpe-openai embeds it, ranked as tiktoken ranks it (what the dump tool writes).
pub fn embedded_vocabulary(encoding: Encoding) -> Result<Vocabulary, bpe::VocabularyError> {
    let bpe = &encoding.embedded().bpe;
    Vocabulary::new((0..bpe.num_tokens() as u32).map(|id| bpe.token_bytes(id)))
}

fn load_file(encoding: Encoding, dir: &Path) -> Result<Encoder, String> {
    let path = dir.join(format!("{}.tokens", encoding.name()));
    // Read into a buffer that is freed once the vocabulary is built from it.
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let vocabulary = Vocabulary::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if vocabulary.len() != encoding.tokens() {
        return Err(format!(
            "{}: {} tokens, where {encoding} has {}",
            path.display(),
            vocabulary.len(),
            encoding.tokens()
        ));
    }
    Encoder::new(encoding, vocabulary)
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
    match encoding.loaded() {
        Loaded::File(encoder) => encoder.count(text),
        Loaded::Embedded(_) => encoding.embedded().count(text),
    }
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// A seeded xorshift64 generator: the same random test inputs on every run.
    pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    pub(crate) fn varied_corpus() -> Vec<String> {
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

    /// The compact encoders, built from the embedded vocabularies as the dump tool writes them.
    fn compact(encoding: Encoding) -> &'static Encoder {
        static O: OnceLock<Encoder> = OnceLock::new();
        static C: OnceLock<Encoder> = OnceLock::new();
        let cell = if encoding == Encoding::O200kBase { &O } else { &C };
        cell.get_or_init(|| {
            Encoder::new(encoding, embedded_vocabulary(encoding).expect("vocabulary")).expect("encoder")
        })
    }

    fn reference(encoding: Encoding) -> &'static tiktoken_rs::CoreBPE {
        match encoding {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    #[test]
    fn compact_encoders_count_like_tiktoken() {
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let encoder = compact(encoding);
            for text in varied_corpus() {
                assert_eq!(
                    encoder.count(&text),
                    reference(encoding).encode_ordinary(&text).len(),
                    "{encoding}: {text:?}"
                );
            }
            let long = "x".repeat(100 * 1024);
            assert_eq!(
                encoder.count(&long),
                reference(encoding).encode_ordinary(&long).len(),
                "{encoding}: long run"
            );
        }
    }

    #[test]
    fn compact_encoders_count_like_tiktoken_on_random_token_soup() {
        // Texts glued from random tokens of the vocabulary itself (as bpe-openai's own equivalence test does),
        // whose pieces often are no token, so they exercise both merges; cut at random places, even mid-character.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let encoder = compact(encoding);
            let vocabulary = encoder.vocabulary();
            for round in 0..300 {
                let mut bytes = Vec::new();
                let tokens = 1 + next() % if round % 10 == 0 { 400 } else { 40 };
                for _ in 0..tokens {
                    bytes.extend_from_slice(vocabulary.token((next() % vocabulary.len() as u64) as u32));
                }
                let text = String::from_utf8_lossy(&bytes);
                let (n, want) = (encoder.count(&text), reference(encoding).encode_ordinary(&text).len());
                assert_eq!(n, want, "{encoding}: {text:?}");
            }
        }
    }

    #[test]
    fn compact_encoders_count_megabyte_runs() {
        // A quadratic merge would take minutes here; the heap merge (O(n log n)) takes a fraction of a second.
        let encoder = compact(Encoding::O200kBase);
        for ch in ["a", " ", "é", "7", "\u{1F600}", "ab"] {
            let text = ch.repeat((1 << 20) / ch.len());
            let n = encoder.count(&text);
            assert_eq!(n, count(Encoding::O200kBase, &text), "{ch:?}");
        }
    }

    #[test]
    fn compact_vocabularies_are_small() {
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            assert_eq!(compact(encoding).vocabulary().len(), encoding.tokens(), "{encoding}");
        }
        let vocabulary = compact(Encoding::O200kBase).vocabulary();
        assert!(vocabulary.heap_bytes() < 5 << 20, "{} bytes", vocabulary.heap_bytes());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn encoders_loaded_from_dumped_files_count_like_the_embedded_ones() {
        let dir = std::env::temp_dir().join(format!("workjet-token-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = varied_corpus();
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let path = dir.join(format!("{}.tokens", encoding.name()));
            std::fs::write(&path, embedded_vocabulary(encoding).unwrap().to_bytes()).unwrap();
            let loaded = load_file(encoding, &dir).unwrap();
            for text in &corpus {
                assert_eq!(
                    loaded.count(text),
                    encoding.embedded().count(text.as_str()),
                    "{encoding}: {text:?}"
                );
            }
        }
        std::fs::write(dir.join("o200k_base.tokens"), b"not a vocabulary").unwrap();
        let err = load_file(Encoding::O200kBase, &dir).err().unwrap();
        assert!(
            err.contains("o200k_base.tokens") && err.contains("checksum mismatch"),
            "{err}"
        );
        // A sound file of the other encoding.
        std::fs::copy(dir.join("cl100k_base.tokens"), dir.join("o200k_base.tokens")).unwrap();
        let err = load_file(Encoding::O200kBase, &dir).err().unwrap();
        assert!(err.contains("100256 tokens, where o200k_base has 199998"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
