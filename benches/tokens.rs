//! Token counting with the compact encoder (what the gateway loads from its data files), against bpe-openai's
//! encoder (the fallback) and tiktoken-rs on the same text.

use std::hint::black_box;

use _workjet_fast::tokens::{Encoder, Encoding, count, embedded_vocabulary};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn text(bytes: usize) -> String {
    let pieces = [
        "The gateway counts prompt tokens before routing a request. ",
        "fn main() {\n    println!(\"{}\", 42);\n}\n",
        "{\"role\": \"user\", \"content\": \"naïve café\"} ",
        "東京は日本の首都です。 ",
        "Быстрая лиса. ",
        "emoji 😀🎉 ",
    ];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(pieces[(i * 5 + i / 3) % pieces.len()]);
        i += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let reference = tiktoken_rs::o200k_base_singleton();
    #[allow(clippy::expect_used)]
    let compact = Encoder::new(
        Encoding::O200kBase,
        embedded_vocabulary(Encoding::O200kBase).expect("vocabulary"),
    )
    .expect("encoder");
    let mut g = c.benchmark_group("tokens/o200k");
    for size in [1024, 16 * 1024, 1024 * 1024] {
        let t = text(size);
        g.throughput(Throughput::Bytes(t.len() as u64));
        g.bench_with_input(BenchmarkId::new("compact", size), &t, |b, t| {
            b.iter(|| black_box(compact.count(t)))
        });
        g.bench_with_input(BenchmarkId::new("bpe-openai", size), &t, |b, t| {
            b.iter(|| black_box(count(Encoding::O200kBase, t)))
        });
        if size <= 16 * 1024 {
            g.bench_with_input(BenchmarkId::new("tiktoken-rs", size), &t, |b, t| {
                b.iter(|| black_box(reference.encode_ordinary(t).len()))
            });
        }
    }
    let adversarial = "x".repeat(64 * 1024);
    g.throughput(Throughput::Bytes(adversarial.len() as u64));
    g.bench_function("compact/64KiB one char", |b| {
        b.iter(|| black_box(compact.count(&adversarial)))
    });
    g.bench_function("bpe-openai/64KiB one char", |b| {
        b.iter(|| black_box(count(Encoding::O200kBase, &adversarial)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
