//! Writes the token encoders' prebuilt data to files the extension loads at run time instead of from its own
//! binary: `cargo run --example dump_token_data -- python/workjet_fast/data` (the Makefile does it before every
//! build).
//!
//! Why: bpe-openai embeds its encoders as MessagePack in the binary and deserializes them from there, which
//! leaves the 32 MB of o200k_base's bytes resident in every worker as pages of the extension. Read from a file
//! into a buffer that is freed after deserializing, only the built encoder (~31 MB) stays. The bytes are
//! bpe-openai's own (`rmp_serde` of its `BytePairEncoding`), so counts are the same by construction; the
//! Python tests check them against tiktoken with the files in place.

// A build step: any failure must stop the build loudly, and it reports what it wrote.
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: dump_token_data DIR"));
    std::fs::create_dir_all(&dir).expect("create the output directory");
    for (name, tokenizer) in [
        ("o200k_base", bpe_openai::o200k_base()),
        ("cl100k_base", bpe_openai::cl100k_base()),
    ] {
        let bytes = rmp_serde::to_vec(&tokenizer.bpe).expect("serialize the encoder");
        let path = dir.join(format!("{name}.bpe"));
        let tmp = dir.join(format!("{name}.bpe.tmp"));
        std::fs::write(&tmp, &bytes).expect("write the encoder data");
        std::fs::rename(&tmp, &path).expect("move the encoder data into place");
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}
