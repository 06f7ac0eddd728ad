"""Type stubs for the native module `workjet_fast._workjet_fast`. Keep in step with rust/py/."""

from typing import Final

__version__: Final[str]

class WorkjetError(Exception): ...
class SseError(WorkjetError): ...
class DlpError(WorkjetError): ...
class TokenizerError(WorkjetError): ...

# --- sse (rust/py/sse.rs) ---

# --- tokens (rust/py/tokens.rs) ---

# --- dlp (rust/py/dlp.rs) ---
