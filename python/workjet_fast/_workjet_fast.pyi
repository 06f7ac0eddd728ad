"""Type stubs for the native module `workjet_fast._workjet_fast`. Keep in step with rust/py/."""

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

from collections.abc import Sequence  # noqa: E402 (kept inside this section)

def count_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of ``text`` in ``"o200k_base"`` or ``"cl100k_base"``, exactly as tiktoken's ``encode_ordinary``.

    Special-token text such as ``<|endoftext|>`` counts as ordinary text. Raises ``TokenizerError`` for any other
    encoding name.
    """

def count_chat_tokens(messages: Sequence[tuple[str, str] | tuple[str, str, str | None]], model: str) -> int:
    """Prompt tokens of a whole chat request, one call per request.

    ``messages`` holds ``(role, content)`` or ``(role, content, name)`` per message, with ``content`` the message's
    text (the text parts joined). The OpenAI Cookbook overhead is added: 3 per message, 1 per name, 3 for reply
    priming. The encoding is ``encoding_for_model(model)``.
    """

def encoding_for_model(model: str) -> str:
    """``"o200k_base"`` or ``"cl100k_base"`` for OpenAI models; any other model gets ``"o200k_base"`` as an estimate."""

# --- dlp (rust/py/dlp.rs) ---
