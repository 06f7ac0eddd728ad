//! Writes the token vocabularies to the files the extension loads at run time:
//! `cargo run --example dump_token_data -- python/workjet_fast/data` (the Makefile does it before every build).
//!
//! Why: bpe-openai embeds its encoders as MessagePack in the binary and builds them with three Aho-Corasick
//! automata each: ~65 MB resident per worker for o200k_base. The files hold only the tokens in rank order
//! (`tokens::bpe::Vocabulary::to_bytes`), from which the extension builds its compact encoder (~4 MB). The tokens
//! are bpe-openai's own, so counts are the same by construction; `cargo test` and the Python tests check them
//! against tiktoken.

// A build step: any failure must stop the build loudly, and it reports what it wrote.
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;

use _workjet_fast::tokens::{Encoding, embedded_vocabulary};

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: dump_token_data DIR"));
    std::fs::create_dir_all(&dir).expect("create the output directory");
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        let bytes = embedded_vocabulary(encoding)
            .expect("bpe-openai's vocabulary")
            .to_bytes();
        let path = dir.join(format!("{}.tokens", encoding.name()));
        let tmp = dir.join(format!("{}.tokens.tmp", encoding.name()));
        std::fs::write(&tmp, &bytes).expect("write the vocabulary");
        std::fs::rename(&tmp, &path).expect("move the vocabulary into place");
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    // Files of the earlier format (bpe-openai's MessagePack) would only take room in a wheel.
    for name in ["o200k_base.bpe", "cl100k_base.bpe"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}
