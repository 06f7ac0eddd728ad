//! SSE framing and the stream relay on a realistic OpenAI chat stream, fed in 1-4 KiB network reads.

use std::hint::black_box;
use std::sync::Arc;

use _workjet_fast::dlp::stream::StreamScanner;
use _workjet_fast::dlp::{Engine, Policy};
use _workjet_fast::filter::{FilterOutput, TextFilter};
use _workjet_fast::relay::{ChunkRelay, FilterFactory};
use _workjet_fast::sse::{SseLimits, SseParser};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// About `bytes` of stream: one chunk per 1-6 words of mixed prose, like a real upstream.
fn openai_stream(bytes: usize) -> Vec<u8> {
    let words = [
        "the", "gateway", "streams", "tokens", "quickly,", "naïve", "café", "東京", "🌍", "and", "then\n",
    ];
    let mut out = Vec::new();
    let mut i = 0usize;
    while out.len() < bytes {
        let n = 1 + i % 6;
        let content: Vec<&str> = (0..n).map(|k| words[(i * 7 + k * 3) % words.len()]).collect();
        let chunk = json!({"id": "chatcmpl-0123456789", "object": "chat.completion.chunk", "created": 1764072000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_0123",
            "choices": [{"index": 0, "delta": {"content": format!("{} ", content.join(" "))}, "logprobs": null,
                "finish_reason": null}]});
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn reads(data: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (1024 + (i * 977) % 3072).min(rest.len());
        v.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    v
}

struct Identity;
impl TextFilter for Identity {
    fn push(&mut self, text: &str) -> FilterOutput {
        FilterOutput {
            text: text.to_owned(),
            ..FilterOutput::default()
        }
    }
    fn finish(&mut self) -> FilterOutput {
        FilterOutput::default()
    }
}

fn dlp_factory(engine: &Arc<Engine>) -> FilterFactory {
    let (engine, policy) = (Arc::clone(engine), Arc::new(Policy::default()));
    Box::new(move || Box::new(StreamScanner::new(Arc::clone(&engine), Arc::clone(&policy))) as Box<dyn TextFilter>)
}

fn bench(c: &mut Criterion) {
    let stream = openai_stream(256 * 1024);
    let reads = reads(&stream);
    let chunks = stream.windows(6).filter(|w| w == b"data: ").count() as u64;
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("parser/256KiB in 1-4KiB reads", |b| {
        b.iter(|| {
            let mut p = SseParser::default();
            let mut n = 0;
            for r in &reads {
                p.feed_with(r, &mut |ev| n += ev.data.len()).ok();
            }
            black_box(n)
        })
    });
    g.bench_function("relay/passthrough", |b| {
        b.iter(|| {
            let mut relay = ChunkRelay::new(None, None, SseLimits::default());
            let mut out = Vec::new();
            for r in &reads {
                relay.feed_into(r, &mut out).ok();
            }
            black_box(out.len())
        })
    });
    g.bench_function("relay/model rewrite", |b| {
        b.iter(|| {
            let mut relay = ChunkRelay::new(Some("workjet-large".into()), None, SseLimits::default());
            let mut out = Vec::new();
            for r in &reads {
                relay.feed_into(r, &mut out).ok();
            }
            black_box(out.len())
        })
    });
    g.bench_function("relay/identity filter", |b| {
        b.iter(|| {
            let factory = Box::new(|| Box::new(Identity) as Box<dyn TextFilter>);
            let mut relay = ChunkRelay::new(None, Some(factory), SseLimits::default());
            let mut out = Vec::new();
            for r in &reads {
                relay.feed_into(r, &mut out).ok();
            }
            black_box(out.len())
        })
    });
    // The same stream through the DLP scanner (response defaults); compare per chunk with the rows above.
    for kind in ["regex", "hyperscan"] {
        let Ok(engine) = Engine::new(None, kind) else { continue };
        let engine = Arc::new(engine);
        g.bench_function(format!("relay/dlp {kind} ({chunks} chunks)"), |b| {
            b.iter(|| {
                let mut relay = ChunkRelay::new(
                    Some("workjet-large".into()),
                    Some(dlp_factory(&engine)),
                    SseLimits::default(),
                );
                let mut out = Vec::new();
                for r in &reads {
                    relay.feed_into(r, &mut out).ok();
                }
                relay.finish_into(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
