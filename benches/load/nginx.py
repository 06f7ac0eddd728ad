"""nginx configurations: the fake upstream (fixed answers from memory) and a keep-alive reverse proxy to it."""

from __future__ import annotations

from pathlib import Path

from benches.load.payloads import completion_json, sse_stream

__all__ = ["fake_upstream_conf", "proxy_conf"]


def _quote(data: bytes) -> str:
    # nginx single-quoted string: \\ \' and \n are the escapes its parser knows.
    text = data.decode()
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _common(tmp: Path, name: str) -> str:
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server_tokens off;
"""


def fake_upstream_conf(tmp: Path, port: int) -> str:
    """POST /json/v1/chat/completions -> a chat.completion; POST /sse/v1/chat/completions -> a 20-chunk stream.
    The path, not the body, picks the answer: a gateway's streaming model points at the /sse/v1 base_url."""
    return (
        _common(tmp, "fake")
        + f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location /json/ {{ default_type application/json; return 200 {_quote(completion_json())}; }}
        location /sse/ {{ default_type text/event-stream; return 200 {_quote(sse_stream())}; }}
    }}
}}
"""
    )


def proxy_conf(tmp: Path, port: int, upstream_port: int) -> str:
    """A proxy hop at its best: pooled keep-alive connections to the fake, no buffering of streams."""
    return (
        _common(tmp, "proxy")
        + f"""
    upstream fake {{ server 127.0.0.1:{upstream_port}; keepalive 128; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""
    )
