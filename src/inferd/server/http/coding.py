"""HTTP content codings, as Triton's HTTP API takes and gives them: ``gzip`` and ``deflate`` request bodies
(``Content-Encoding``), inflated a piece at a time under a size limit, and compressed responses for a client that
asks (``Accept-Encoding``). Bytes only, no I/O; the routes turn the errors into their answers (415, 413, 400).
"""

from __future__ import annotations

import zlib

CODINGS = ("gzip", "deflate")
"""The content codings inferd reads and writes (besides ``identity``, which is none)."""
ACCEPTED = ", ".join(CODINGS)
"""``Accept-Encoding`` of a refusal of any other coding (RFC 7694)."""
_ALIASES = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
"""RFC 9110 asks recipients to read ``x-gzip`` as ``gzip``."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_LEVEL = 1
"""zlib's fastest level: about nine times the speed of its default (6, which Triton uses) for outputs 7 % larger
(measured on FP32 model outputs as JSON); a server's time is worth more than a few bytes on the wire."""


class CodingError(ValueError):
    """A body that cannot be decoded as it says it is encoded."""


class UnsupportedCodingError(CodingError):
    """A ``Content-Encoding`` inferd does not read."""


class InflatedTooLargeError(CodingError):
    """A body that inflates (or arrives) past the limit."""


def request_coding(value: str | bytes | None) -> str | None:
    """The coding a ``Content-Encoding`` value names: ``gzip``, ``deflate``, or None for none (absent or
    ``identity``); :class:`UnsupportedCodingError`, naming what is supported, for anything else."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip().lower()
    if text in ("", "identity"):
        return None
    coding = _ALIASES.get(text)
    if coding is None:
        raise UnsupportedCodingError(f"Content-Encoding {text!r} is not supported: send the body as gzip or "
                                     "deflate, or uncompressed (identity)")
    return coding


class Inflater:
    """Inflates one request body a piece at a time, never holding more than ``limit`` inflated bytes: a body that
    inflates past it (a zip bomb) raises :class:`InflatedTooLargeError` as soon as it does, and so does one that
    arrives past it (empty gzip members inflate to nothing). ``deflate`` is read as the zlib format it is
    (RFC 9110), or as raw deflate data, which some clients send under that name."""

    __slots__ = ("_head", "_inflated", "_received", "_stream", "coding", "limit")

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self._received = 0
        self._inflated = 0
        self._head = b""
        """The first bytes of a deflate body, until two tell zlib's format from raw deflate."""
        self._stream: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS) if coding == "gzip" else None

    def feed(self, data: bytes) -> bytes:
        """The inflated bytes of the next piece of the body."""
        self._received += len(data)
        if self._received > self.limit:
            raise InflatedTooLargeError(f"{self._received} bytes received")
        stream = self._stream
        if stream is None:  # deflate: its format is not known yet
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            stream = self._stream = zlib.decompressobj(zlib.MAX_WBITS if _is_zlib(data) else -zlib.MAX_WBITS)
        pieces = []
        try:
            while data:
                piece = stream.decompress(data, self.limit - self._inflated + 1)  # never 0, which is "no limit"
                self._inflated += len(piece)
                if self._inflated > self.limit:
                    raise InflatedTooLargeError(f"over {self.limit} bytes inflated")
                pieces.append(piece)
                data = stream.unconsumed_tail
                if stream.eof:
                    data = stream.unused_data
                    if data and self.coding != "gzip":
                        raise CodingError(f"the request body has {len(data)} bytes after the end of its deflate "
                                          "data")
                    if data:  # another gzip member (RFC 1952 allows several)
                        stream = self._stream = zlib.decompressobj(_GZIP_WBITS)
        except zlib.error as exc:
            raise CodingError(f"the request body is not valid {self.coding} data ({exc})") from None
        return b"".join(pieces)

    def finish(self) -> bytes:
        """What the end of the body leaves; :class:`CodingError` when the data stops before its end."""
        if self._received == 0:
            return b""  # an empty body: nothing to inflate
        stream = self._stream
        if stream is None:
            raise CodingError(f"the request body is not valid {self.coding} data (1 byte)")
        if not stream.eof:
            raise CodingError(f"the request body is not valid {self.coding} data (it stops before its end)")
        return b""


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """A whole body, inflated (see :class:`Inflater`)."""
    inflater = Inflater(coding, limit)
    return inflater.feed(body) + inflater.finish()


def _is_zlib(head: bytes) -> bool:
    """Whether data starts with a zlib header (RFC 1950): deflate method, and the check bits."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


def response_coding(accept: str | bytes | None) -> str | None:
    """The coding to compress a response with for this ``Accept-Encoding``: gzip or deflate, whichever has the
    higher ``q`` (gzip on a tie; ``*`` is gzip), or None when the client asks for neither."""
    if not accept:
        return None
    text = accept.decode("latin-1") if isinstance(accept, bytes) else accept
    best: tuple[float, bool] | None = None
    chosen = None
    for entry in text.split(","):
        name, _, params = entry.partition(";")
        name = name.strip().lower()
        coding = "gzip" if name == "*" else _ALIASES.get(name)
        if coding is None:
            continue
        key = (_quality(params), coding == "gzip")
        if key[0] > 0 and (best is None or key > best):
            best, chosen = key, coding
    return chosen


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def compress(content: bytes, coding: str) -> bytes:
    """``content`` in ``coding`` (gzip, or deflate in zlib's format, which clients inflate with ``zlib``)."""
    if coding == "gzip":
        stream = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        return stream.compress(content) + stream.flush()
    return zlib.compress(content, _LEVEL)
