"""Deterministic text corpora for the benchmarks and parity tests.

`make_corpus(kind, size_bytes, seed)` returns the same text for the same arguments on every machine (it only uses
`random.Random(seed)`, never the global generator). Kinds:

- ``prose``: English sentences with punctuation, numbers and paragraph breaks;
- ``code``: Python/Rust/JS-like snippets with indentation runs, brackets and operators;
- ``json``: compact and pretty-printed JSON documents with nested objects, numbers and escapes;
- ``multilingual``: CJK, Cyrillic, Arabic, Devanagari, accented Latin and emoji (multi-byte UTF-8, ZWJ sequences);
- ``mixed``: all of the above, interleaved.

`make_openai_stream` and `split_reads` build a realistic upstream chat-completions SSE stream and cut it into
network reads, for the SSE and relay benchmarks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

KINDS = ("prose", "code", "json", "multilingual", "mixed")

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more about can said out up them "
    "gateway request stream token model latency provider audit policy secret customer invoice deployment cluster "
    "performance benchmark throughput parser buffer network response payload configuration"
).split()

_CODE_LINES = (
    "def {name}(self, {arg}: int = 0) -> list[str]:",
    "    return [{arg} * 2 for {arg} in range({num}) if {arg} % 3 == 0]",
    "fn {name}(&mut self, {arg}: &[u8]) -> Result<usize, Error> {{",
    "    let {arg} = self.{name}.get({num}).ok_or(Error::Missing)?;",
    "}}",
    "const {name} = async ({arg}) => {{ await fetch(`/api/v1/{name}?id=${{{arg}}}`); }};",
    "        if ({arg} != null && {arg}.length > {num}) {{ throw new Error('{name}'); }}",
    "# TODO({name}): handle the {arg} case when {num} > limit",
    "    for (int i = 0; i < {num}; ++i) {{ {arg}[i] ^= 0x{hexnum:04X}; }}",
    "",
    '\t\t{name}_{arg} := map[string]int{{"{arg}": {num}}}',
)

_SCRIPTS = (
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
    "我们今天讨论网关的性能、延迟和吞吐量问题。",
    "한국어 문장은 띄어쓰기를 사용합니다. 안녕하세요!",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "النص العربي يُكتب من اليمين إلى اليسار مع أرقام ١٢٣٤.",
    "हिन्दी में लिखा गया यह वाक्य देवनागरी लिपि का उदाहरण है।",
    "Ünïcödé façade naïve café — «guillemets» and ‘quotes’ in Zürich.",
    "Ελληνικά: η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "emoji 😀🎉🚀 family 👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵🇧🇷 skin tones 👍🏽👋🏿",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "עברית נכתבת מימין לשמאל.",
)


def _prose(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 24))]
    words[0] = words[0].capitalize()
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 100_000)))
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(["(see above)", "e.g.,", "i.e.", "—", "don't", "it's"]))
    end = rng.choice([".", ".", ".", "?", "!", ";"])
    tail = "\n\n" if rng.random() < 0.15 else " "
    return " ".join(words) + end + tail


def _code(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 10)):
        template = rng.choice(_CODE_LINES)
        lines.append(
            template.format(
                name=rng.choice(_WORDS) + rng.choice(["", "_id", "Count", "2"]),
                arg=rng.choice(["x", "buf", "items", "req", "n"]),
                num=rng.randint(0, 4096),
                hexnum=rng.randint(0, 0xFFFF),
            )
        )
    return "\n".join(lines) + "\n\n"


def _json_value(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice(
            [
                rng.randint(-(10**9), 10**9),
                round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)),
                " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6))),
                'line\nbreak "quoted" tab\t ü',
                True,
                None,
            ]
        )
    if roll < 0.7:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {f"{rng.choice(_WORDS)}_{i}": _json_value(rng, depth + 1) for i in range(rng.randint(1, 6))}


def _json(rng: random.Random) -> str:
    doc = {"id": f"req_{rng.getrandbits(64):016x}", "data": _json_value(rng, 0)}
    if rng.random() < 0.5:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.3) + "\n"
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _multilingual(rng: random.Random) -> str:
    return rng.choice(_SCRIPTS) + rng.choice([" ", " ", "\n", "  ", "\n\n"])


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "prose": _prose,
    "code": _code,
    "json": _json,
    "multilingual": _multilingual,
}


def make_corpus(kind: str, size_bytes: int, seed: int = 0) -> str:
    """Deterministic text of `kind` whose UTF-8 encoding is at most `size_bytes` long (and close to it)."""
    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {KINDS}")
    rng = random.Random(f"{kind}:{seed}")
    parts: list[str] = []
    total = 0
    kinds = list(_GENERATORS)
    while total < size_bytes:
        generator = _GENERATORS[rng.choice(kinds) if kind == "mixed" else kind]
        piece = generator(rng)
        parts.append(piece)
        total += len(piece.encode())
    data = "".join(parts).encode()[:size_bytes]
    return data.decode("utf-8", errors="ignore")  # drop a character cut in half at the end


def make_openai_stream(text: str, seed: int = 0, model: str = "gpt-4o-2024-08-06", usage: bool = True) -> bytes:
    """An upstream chat-completions SSE stream whose deltas concatenate to `text` (1-6 words per chunk)."""
    rng = random.Random(seed)
    base = {"id": f"chatcmpl-{rng.getrandbits(64):016x}", "object": "chat.completion.chunk", "created": 1764072000}
    base |= {"model": model, "system_fingerprint": "fp_0123456789"}

    def frame(choice: dict[str, object], extra: dict[str, object] | None = None) -> bytes:
        chunk = dict(base, choices=[choice] if choice else [], **(extra or {}))
        return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    out = [frame({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None})]
    pos = 0
    while pos < len(text):
        end = pos
        for _ in range(rng.randint(1, 6)):
            nxt = text.find(" ", end + 1)
            end = len(text) if nxt < 0 else nxt
        delta = {"content": text[pos:end]}
        out.append(frame({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}))
        pos = end
    out.append(frame({"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}))
    if usage:
        counts = {"prompt_tokens": 42, "completion_tokens": len(out), "total_tokens": 42 + len(out)}
        out.append(frame({}, {"usage": counts}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def split_reads(data: bytes, min_size: int = 1024, max_size: int = 4096, seed: int = 0) -> list[bytes]:
    """Cut `data` into reads of random sizes, as a socket would deliver them."""
    rng = random.Random(seed)
    reads = []
    pos = 0
    while pos < len(data):
        n = rng.randint(min_size, max_size)
        reads.append(data[pos : pos + n])
        pos += n
    return reads
