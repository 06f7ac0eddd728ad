"""Type stubs for the native module `workjet_fast._workjet_fast`. Keep in step with rust/py/."""

import os
from typing import Final

__version__: Final[str]

class WorkjetError(Exception): ...
class SseError(WorkjetError): ...
class DlpError(WorkjetError): ...
class TokenizerError(WorkjetError): ...

# --- sse (rust/py/sse.rs) ---

from typing import final  # noqa: E402 (kept inside this section)

@final
class SseParser:
    """Incremental Server-Sent Events parser (WHATWG framing), fed raw network reads.

    Events come back as ``(event, data)``; ``event`` is ``None`` for the default type ``message``. ``SseError`` is
    raised when a line or an event's data grows past its cap; the parser then refuses further input until
    ``finish()``. With ``lenient_eof`` (the default) ``finish()`` also returns a last event that had data but no
    blank line after it; with ``lenient_eof=False`` it is discarded, as the spec says.
    """

    def __new__(
        cls, max_line_bytes: int = 1048576, max_event_bytes: int = 4194304, lenient_eof: bool = True
    ) -> SseParser: ...
    def feed(self, data: bytes) -> list[tuple[str | None, str]]: ...
    def finish(self) -> list[tuple[str | None, str]]: ...

@final
class ChunkRelay:
    """Relays an upstream OpenAI chat-completions stream to the client, one call per network read.

    ``feed()`` returns the bytes to send now (``data: <json>\n\n`` frames, possibly empty); ``finish()`` returns the
    last bytes when the upstream ends. ``model`` is replaced by ``public_model`` when given. ``[DONE]`` is only sent
    when the upstream sent it (or a filter blocked); read the properties once the stream is over.
    """

    def __new__(
        cls, public_model: str | None = None, max_line_bytes: int = 1048576, max_event_bytes: int = 4194304
    ) -> ChunkRelay: ...
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    @property
    def done(self) -> bool:
        """``data: [DONE]`` has been sent."""
    @property
    def blocked(self) -> bool:
        """A content filter stopped the stream (``finish_reason`` is then ``"content_filter"``)."""
    @property
    def usage(self) -> tuple[int, int] | None:
        """``(prompt_tokens, completion_tokens)`` from the upstream's last ``usage`` object."""
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def error(self) -> str | None:
        """The upstream's ``error`` object as JSON text, when a frame was ``{"error": ...}``."""
    @property
    def content_chars(self) -> int:
        """Characters of ``delta.content`` released to the client."""
    @property
    def findings(self) -> list[tuple[str, str, str, str | None]]:
        """``(rule_id, entity, action, value_hmac)`` of every content-filter finding so far."""

# --- tokens (rust/py/tokens.rs) ---

from collections.abc import Iterable, Sequence  # noqa: E402 (kept inside this section)

def count_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of ``text`` in ``"o200k_base"`` or ``"cl100k_base"``, exactly as tiktoken's ``encode_ordinary``.

    Special-token text such as ``<|endoftext|>`` counts as ordinary text. Raises ``TokenizerError`` for any other
    encoding name.
    """

def count_chat_tokens(messages: Sequence[tuple[str, str] | tuple[str, str, str | None]], model: str) -> int:
    """Prompt tokens of a whole chat request, one call per request.

    ``messages`` holds ``(role, content)`` or ``(role, content, name)`` per message, with ``content`` the message's
    text (the text parts joined). The OpenAI Cookbook overhead is added: 3 per message, 1 per name, 3 for reply
    priming. The encoding is ``encoding_for_model(model)``. Contents of 64 bytes or more are looked up in a
    bounded per-process cache first (keyed by secret-keyed 128-bit digests, length and encoding): the system
    prompt and history a chat resends on every turn are counted once.
    """

def set_token_data_dir(dir: str | os.PathLike[str]) -> bool:
    """Load token vocabularies from ``<dir>/<encoding>.tokens`` into the compact encoder (~6 MB for o200k_base)
    instead of building bpe-openai's encoder from the copy embedded in the extension (~65 MB); returns False when
    a directory was already set. The package sets its ``data/`` directory at import when the files are there."""

def token_data_source(encoding: str) -> str | None:
    """Where ``encoding``'s data came from: ``"file"`` or ``"embedded: <why>"``; None before its first use."""

def encoding_for_model(model: str) -> str:
    """``"o200k_base"`` or ``"cl100k_base"`` for OpenAI models; any other model gets ``"o200k_base"`` as an estimate."""

# --- dlp (rust/py/dlp.rs) ---

@final
class DlpPolicy:
    """What to do with DLP findings, for one request or stream.

    ``actions`` maps a rule id to ``"block"``, ``"redact"``, ``"log"`` or ``"allow"`` (allow = the rule does not
    run); unnamed rules keep their defaults (secrets block a request and are redacted in a response, PII is
    redacted). ``allow_values`` are exact values that are never findings; ``allow_patterns`` are regexes that must
    match a whole value. ``disabled`` lists rule ids that do not run. With ``hmac_key``, findings carry the
    HMAC-SHA256 (hex) of the matched value for correlation; values themselves are never returned.
    """

    def __new__(
        cls,
        actions: dict[str, str] | None = None,
        allow_values: list[str] | None = None,
        allow_patterns: list[str] | None = None,
        disabled: list[str] | None = None,
        hmac_key: bytes | None = None,
    ) -> DlpPolicy: ...

@final
class Finding:
    """One finding: ``start``/``end`` are character offsets (``text[start:end]``), ``byte_*`` UTF-8 offsets."""

    @property
    def rule_id(self) -> str: ...
    @property
    def entity(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def byte_start(self) -> int: ...
    @property
    def byte_end(self) -> int: ...

@final
class ScanResult:
    """The DLP decision for one request.

    ``texts`` holds the redacted texts (same order as given) when anything was redacted, else ``None``;
    ``findings`` is ``(rule_id, entity, action, count)``; ``value_hmacs`` is ``(rule_id, hmac_hex)`` per finding
    when the policy has an HMAC key, else ``None``.
    """

    @property
    def blocked(self) -> bool: ...
    @property
    def texts(self) -> list[str] | None: ...
    @property
    def findings(self) -> list[tuple[str, str, str, int]]: ...
    @property
    def value_hmacs(self) -> list[tuple[str, str]] | None: ...

@final
class DlpStream:
    """Streaming scanner for one response text: ``push()`` returns what is safe to send now, ``finish()`` the rest.

    Text is held back only while its tail could still become a match (at most ``DlpEngine.max_holdback`` bytes).
    Once ``blocked`` is true, nothing more is released. ``findings`` is ``(rule_id, entity, action, value_hmac)``.
    """

    def push(self, text: str) -> str: ...
    def finish(self) -> str: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def findings(self) -> list[tuple[str, str, str, str | None]]: ...

@final
class DlpEngine:
    """A compiled DLP ruleset: the built-in rules plus custom rules given as a JSON list.

    A custom rule is ``{"id", "entity", "pattern", "category"?, "action"?, "request_action"?, "response_action"?,
    "validator"?, "confidence"?, "max_len"?, "keywords"?}``; one with a built-in's id replaces it. ``engine`` is
    ``"auto"`` (Vectorscan when built in and supported by the CPU, else pure Rust), ``"hyperscan"`` or ``"regex"``;
    both give identical findings. Raises ``DlpError`` naming the rule when a pattern is invalid.
    """

    def __new__(cls, rules_json: str | None = None, engine: str = "auto") -> DlpEngine: ...
    @property
    def engine(self) -> str: ...
    @property
    def rule_ids(self) -> list[str]: ...
    @property
    def rules(self) -> list[tuple[str, str, str]]:
        """``(rule_id, entity, category)`` of every rule; category is ``"secret"`` or ``"pii"``."""
    @property
    def patterns(self) -> list[tuple[str, str]]:
        """``(rule_id, pattern)`` of every rule, in rule order."""
    @property
    def max_holdback(self) -> int: ...
    def scan(self, text: str) -> list[Finding]:
        """Every finding of every rule, leftmost-longest, without a policy."""
    def redact(self, text: str, findings: list[Finding]) -> str:
        """``text`` with each finding replaced by ``[REDACTED:<ENTITY>]``; overlapping findings are merged."""
    def apply(self, texts: list[str], policy: DlpPolicy | None = None, direction: str = "request") -> ScanResult:
        """The per-request call: scans all message texts at once and applies ``policy``."""
    def request_clean(self, body: object, policy: DlpPolicy, max_bytes: int) -> bool:
        """True when a request body's texts (contents, text parts, tool and function call arguments) total at most
        ``max_bytes`` UTF-8 bytes and have no finding under ``policy``. False otherwise, and for a body whose shape
        the gateway's Python walk reads differently: then scan with ``apply``."""
    def response_clean(self, result: object, policy: DlpPolicy, max_bytes: int) -> bool:
        """``request_clean`` for a JSON answer: every choice's message content and call arguments."""
    def stream(self, policy: DlpPolicy | None = None) -> DlpStream:
        """A streaming scanner with response defaults (secrets are redacted, not blocked)."""
    def relay(
        self,
        policy: DlpPolicy | None = None,
        public_model: str | None = None,
        max_line_bytes: int = 1048576,
        max_event_bytes: int = 4194304,
    ) -> ChunkRelay:
        """A ``ChunkRelay`` whose every choice's text goes through a streaming scanner of this engine."""

# --- response heads (rust/py/head.rs) ---

def response_head(
    status_line: bytes,
    defaults: Iterable[tuple[bytes, bytes]],
    headers: Iterable[tuple[bytes, bytes]],
    keep_alive: bool,
) -> tuple[bytes, int] | None:
    """``(head, content_length)`` as uvicorn would write it (``content_length`` -1: a chunked body), or None when
    some header needs uvicorn's own code: invalid, ``connection``, ``transfer-encoding``, an unusual
    ``content-length``, or not a pair of bytes."""

def chat_ok(body: object) -> tuple[str, bool] | None:
    """``(model, stream)`` when ``pipeline.validate.validate_chat(body)`` would return them without raising; None
    otherwise (then ``validate_chat`` says what is wrong)."""

def request_key(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None] | None:
    """``(key_hash, content_length)`` from ASGI request headers (the last value of a name counts): the SHA-256 hex
    of the API key when it is well formed as sent (``Bearer KEY`` or ``x-api-key``; else None, for the Python code
    to judge), and the ``content-length`` value decoded as latin-1. None when an item is not a pair of bytes."""

def ratelimit_header_pairs(
    rpm: int | None, tpm: int | None, rpm_level: float, tpm_level: float
) -> list[tuple[bytes, bytes]] | None:
    """OpenAI's ``x-ratelimit-*`` headers as ASGI bytes pairs, the values of ``pipeline.limits.ratelimit_headers``;
    None when a limit is above 2**53 or a level is not finite (Python then builds them)."""

# --- audit records (rust/py/audit.rs) ---

from typing import Any  # noqa: E402 (kept inside this section)

def chain_hashes(chain_id: str, first_seq: int, prev: str, records: list[str]) -> list[str]:
    """The hex SHA-256 of ``chain_id \\n seq \\n prev_hash \\n record`` for each record, numbered from
    ``first_seq``, the first linked to ``prev`` and each to the one before: ``chain.row_hash`` for a whole run."""

def audit_record(
    ctx: Any, access: bool
) -> tuple[str, bytes | None, tuple[str, float, Any, Any, Any, Any, int | None]] | None:
    """``(canonical text, access-log line or None, columns)`` of a finished ``RequestContext``: what
    ``audit.record`` makes of ``ctx.record()`` (``canonical(normalise(r))``, ``access_log_line(r)``,
    ``columns(normalise(r))``), or None when a value would be changed by ``normalise`` or needs orjson's
    ``default=str``, or bodies were kept: the caller takes the Python path then."""
