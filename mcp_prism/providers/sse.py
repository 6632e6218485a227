"""Incremental Server-Sent-Events decoding and encoding (the WHATWG `text/event-stream` format).

Runs on every streamed chunk, so it works on whole buffers with `bytes.find` / `split` rather than
byte by byte. Only complete events (up to a blank line) are decoded; a blank line can never fall
inside a UTF-8 multibyte sequence, so chunk boundaries that split a character are harmless.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Feed raw bytes as they arrive; get back `(event name or None, data)` per complete event.

    Events with no `data:` field are not dispatched (as browsers do); `id:` and `retry:` are ignored,
    since the gateway never reconnects a provider stream.
    """

    __slots__ = ("_buf", "_scanned", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._scanned = 0  # bytes of _buf already known to hold no event boundary
        self._started = False

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if not chunk:
            return []
        if not self._started:
            # The BOM may only open the stream; wait until we can tell whether it is there.
            buf = self._buf + chunk
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            self._buf = b""
            chunk = buf[3:] if buf.startswith(_BOM) else buf
        if b"\r" in chunk or self._buf.endswith(b"\r"):
            chunk = self._normalise(chunk)
        buf = self._buf + chunk if self._buf else chunk
        # Any boundary lies in the new bytes or straddles the old tail, so search only from there.
        end = buf.rfind(b"\n\n", max(self._scanned - 1, 0))
        if end < 0:
            self._buf = buf
            self._scanned = len(buf)
            return []
        self._buf = buf[end + 2:]
        self._scanned = len(self._buf)
        return _parse_blocks(buf[:end])

    def _normalise(self, chunk: bytes) -> bytes:
        # A CR at the very end may be the first half of a CRLF: hold it back until the next chunk.
        if self._buf.endswith(b"\r"):
            self._buf = self._buf[:-1]
            self._scanned = min(self._scanned, len(self._buf))
            chunk = b"\r" + chunk
        held = chunk.endswith(b"\r")
        if held:
            chunk = chunk[:-1]
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk + b"\r" if held else chunk

    def flush(self) -> list[tuple[str | None, str]]:
        """The last event when the stream ended without its closing blank line (lenient, as most
        clients are), then reset."""
        buf = self._buf
        if not self._started and buf.startswith(_BOM):
            buf = buf[3:]
        self._buf = b""
        self._scanned = 0
        self._started = False
        buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")
        return _parse_blocks(buf) if buf else []


def _parse_blocks(raw: bytes) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for block in raw.decode("utf-8", "replace").split("\n\n"):
        # The common shapes, `data: ...` alone or after `event: ...`, skip the field loop.
        if block.startswith("data: "):
            if "\n" not in block:
                out.append((None, block[6:]))
                continue
        elif block.startswith("event: "):
            nl = block.find("\n")
            if nl > 7 and block.startswith("data: ", nl + 1) and block.find("\n", nl + 1) < 0:
                out.append((block[7:nl], block[nl + 7:]))
                continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line[0] == ":":
                continue
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value or None
        if data:
            out.append((event, "\n".join(data)))
    return out


def encode_sse(data: str, event: str | None = None) -> bytes:
    """One SSE event; multi-line data becomes one `data:` line per line, as the format requires."""
    if "\n" in data or "\r" in data:
        body = "".join(f"data: {line}\n" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    else:
        body = f"data: {data}\n"
    if event is not None:
        return f"event: {event}\n{body}\n".encode()
    return f"{body}\n".encode()
