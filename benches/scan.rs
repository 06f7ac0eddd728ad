//! DLP engines: the per-request call (`apply`) and the streaming scanner, pure Rust vs Vectorscan.
//!
//! Inputs come from a small seeded generator (English-like prose, code and JSON fragments, some multi-byte text),
//! with or without planted PII/secrets (one every ~2 KiB): a 620-byte prompt, 16 KiB and 1 MiB.
//! Run: `cargo bench --bench scan --features hyperscan`.

use std::hint::black_box;
use std::sync::Arc;

use _workjet_fast::dlp::redact::apply;
use _workjet_fast::dlp::stream::StreamScanner;
use _workjet_fast::dlp::{Direction, Engine, Policy};
use _workjet_fast::filter::TextFilter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "request",
    "stream",
    "token",
    "model",
    "latency",
    "provider",
    "audit",
    "policy",
    "customer",
    "invoice",
    "deployment",
    "cluster",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "with",
    "be",
    "by",
    "on",
    "not",
    "this",
    "are",
    "from",
    "at",
    "which",
    "key",
    "they",
    "money",
    "version",
    "2.4.1",
    "2024-11-25",
    "42",
    "3.14",
    "fn",
    "let",
    "return",
    "{\"id\":",
    "7,",
    "naïve",
    "café",
    "東京",
    "—",
    "(see",
    "above)",
    "user_id=1234",
];

const PLANTED: &[&str] = &[
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "536-22-8146",
    "ghp_ZyXwVuTsRqPoNmLkJiHgFeDcBa0123456789",
    "AKIAZ3MPLQ7RT2VWX4YB",
    "DE89 3704 0044 0532 0130 00",
    "192.168.1.20",
    "(415) 555-2671",
];

/// Deterministic text of about `size` bytes (xorshift; no external crate).
fn corpus(size: usize, planted: bool, seed: u64) -> String {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::with_capacity(size + 64);
    // The first plant comes early so that the 620-byte prompt has one too.
    let mut last_plant = 0usize.wrapping_sub(2048 - 300);
    while out.len() < size {
        let r = next();
        if planted && out.len().wrapping_sub(last_plant) >= 2048 {
            out.push_str(PLANTED[(r % PLANTED.len() as u64) as usize]);
            last_plant = out.len();
        } else {
            out.push_str(WORDS[(r % WORDS.len() as u64) as usize]);
        }
        out.push(if r % 13 == 0 {
            '\n'
        } else if r % 7 == 0 {
            '.'
        } else {
            ' '
        });
        if r % 7 == 0 {
            out.push(' ');
        }
    }
    let mut cut = size.min(out.len());
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out
}

fn engines() -> Vec<Engine> {
    let mut v = Vec::new();
    for kind in ["regex", "hyperscan"] {
        if let Ok(e) = Engine::new(None, kind) {
            v.push(e);
        }
    }
    v
}

fn bench_apply(c: &mut Criterion) {
    let policy = Policy::default();
    let mut g = c.benchmark_group("dlp_apply");
    for (size, label) in [(620, "620B"), (16 * 1024, "16KiB"), (1024 * 1024, "1MiB")] {
        for planted in [false, true] {
            let text = corpus(size, planted, 7);
            g.throughput(Throughput::Bytes(text.len() as u64));
            for e in engines() {
                let id = format!(
                    "{}/{}/{}",
                    e.kind().as_str(),
                    label,
                    if planted { "pii" } else { "clean" }
                );
                g.bench_with_input(BenchmarkId::from_parameter(id), &text, |b, t| {
                    b.iter(|| apply(&e, &[black_box(t.as_str())], &policy, Direction::Request))
                });
            }
        }
    }
    g.finish();
}

fn bench_stream(c: &mut Criterion) {
    let policy = Arc::new(Policy::default());
    let mut g = c.benchmark_group("dlp_stream");
    let text = corpus(16 * 1024, true, 9);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for e in engines() {
        let kind = e.kind().as_str();
        let e = Arc::new(e);
        // ~4-byte tokens (one per SSE chunk) and 256-byte reads.
        for step in [4usize, 256] {
            g.bench_function(format!("{kind}/16KiB/pushes_of_{step}B"), |b| {
                b.iter(|| {
                    let mut s = StreamScanner::new(Arc::clone(&e), Arc::clone(&policy));
                    let mut n = 0;
                    let mut i = 0;
                    while i < text.len() {
                        let mut j = (i + step).min(text.len());
                        while !text.is_char_boundary(j) {
                            j += 1;
                        }
                        n += s.push(&text[i..j]).text.len();
                        i = j;
                    }
                    n + s.finish().text.len()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_apply, bench_stream);
criterion_main!(benches);
