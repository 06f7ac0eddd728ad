"""Seed Python tiktoken's cache from the rank files shipped in the `tiktoken-rs` crate, so tiktoken runs offline.

tiktoken downloads `https://openaipublic.blob.core.windows.net/encodings/<name>.tiktoken` at first use and caches
it as `$TIKTOKEN_CACHE_DIR/<sha1(url)>`, checking its sha256 against the hash pinned in
`tiktoken_ext/openai_public.py` (see `tiktoken/load.py`, `read_file_cached`). The same files are in the crate
source under `$CARGO_HOME/registry/src/*/tiktoken-rs-*/assets/`; this copies them under those names after checking
the same hashes.

Usage: python tools/seed_tiktoken_cache.py [CACHE_DIR]   (default: .cache/tiktoken), then
export TIKTOKEN_CACHE_DIR=CACHE_DIR.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# Pinned in tiktoken_ext/openai_public.py (tiktoken 0.14).
SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def find_crate_assets() -> Path | None:
    """The newest `tiktoken-rs-*/assets` folder in the cargo registry sources, or None."""
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(cargo_home.glob("registry/src/*/tiktoken-rs-*/assets"))
    return found[-1] if found else None


def cache_key(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def seed(cache_dir: Path, encodings: tuple[str, ...] = ("cl100k_base", "o200k_base")) -> list[str] | None:
    """Copy the rank files into `cache_dir`; returns the seeded encodings, or None when the crate is missing."""
    assets = find_crate_assets()
    if assets is None:
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    seeded = []
    for name in encodings:
        source = assets / f"{name}.tiktoken"
        if not source.is_file():
            continue
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != SHA256[name]:
            raise ValueError(f"{source} does not match the sha256 that tiktoken pins for {name}")
        target = cache_dir / cache_key(BLOB_URL.format(name=name))
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        seeded.append(name)
    return seeded


def main(argv: list[str]) -> int:
    cache_dir = Path(argv[1]) if len(argv) > 1 else Path(".cache/tiktoken")
    seeded = seed(cache_dir)
    if seeded is None:
        print("tiktoken-rs crate source not found under $CARGO_HOME/registry/src (run `cargo fetch`)", file=sys.stderr)
        return 1
    print(f"seeded {', '.join(seeded)} into {cache_dir}; export TIKTOKEN_CACHE_DIR={cache_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
