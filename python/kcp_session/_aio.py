"""asyncio API: StreamReader/StreamWriter-shaped objects over the Rust core.

Each operation is started in Rust (a task on the extension's tokio runtime)
with the running loop and a callback; the task completes it with
``loop.call_soon_threadsafe(callback, value, exc)``. No polling, no thread
per operation.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Optional, Tuple, Union

from . import _kcp_session as _core

_CHUNK = 256 * 1024


def _start(op: Callable[..., None], *args: Any) -> "asyncio.Future[Any]":
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def done(value: Any, exc: Optional[BaseException]) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    op(*args, loop, done)
    return fut


class StreamReader:
    """Reads a KCP session like :class:`asyncio.StreamReader`.

    KCP has no end-of-stream marker: ``read`` returns ``b""`` (EOF) once the
    session has ended (closed, idle timeout, dead link); ``exception()``
    then tells why. Cancelling a read (e.g. :func:`asyncio.wait_for`) loses
    no data: what arrives later is returned by the next read.
    """

    def __init__(self, core: Any) -> None:
        self._core = core
        self._buf = bytearray()
        self._pending: Optional[asyncio.Future[Any]] = None
        self._eof = False
        self._exc: Optional[BaseException] = None

    async def _fill(self) -> bool:
        """Appends the next chunk to the buffer; False at EOF."""
        if self._eof:
            return False
        if self._pending is None:
            self._pending = _start(self._core.read, _CHUNK)
        pending = self._pending
        try:
            data = await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():
                self._pending = None
            raise
        except Exception as e:  # the session ended: end of stream
            self._pending = None
            self._eof = True
            self._exc = e
            return False
        self._pending = None
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: everything until EOF); ``b""`` at EOF."""
        if n == 0:
            return b""
        if n < 0:
            while await self._fill():
                pass
            return self._take(len(self._buf))
        if not self._buf:
            await self._fill()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at EOF."""
        while len(self._buf) < n:
            if not await self._fill():
                partial = self._take(len(self._buf))
                raise asyncio.IncompleteReadError(partial, n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including ``separator``; IncompleteReadError at EOF."""
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                return self._take(i + len(separator))
            start = max(0, len(self._buf) - len(separator) + 1)
            if not await self._fill():
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), None)

    async def readline(self) -> bytes:
        """One line including ``\\n``; at EOF what is left (maybe ``b""``)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def exception(self) -> Optional[BaseException]:
        """Why the session ended, once ``read`` has returned EOF."""
        return self._exc

    def __aiter__(self) -> "StreamReader":
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class StreamWriter:
    """Writes a KCP session like :class:`asyncio.StreamWriter`.

    ``write`` queues and never waits; ``drain`` waits until every queued
    byte is in the session (the send window has taken it); ``drain_acked``
    waits until the peer has acknowledged everything.
    """

    def __init__(self, core: Any, reader: StreamReader) -> None:
        self._core = core
        self._reader = reader
        self._closing = False
        self._closed: Optional[asyncio.Future[Any]] = None

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._closing:
            raise BrokenPipeError("the writer is closing")
        self._core.write(bytes(data))

    def writelines(self, data: Any) -> None:
        for d in data:
            self.write(d)

    async def drain(self) -> None:
        if self._closing:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        await _start(self._core.drain)

    async def drain_acked(self) -> None:
        """Waits until the peer has acknowledged every byte written."""
        await _start(self._core.drain_acked)

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Sends what is queued, then closes the session (kcp-go ``Close``)."""
        if self._closing:
            return
        self._closing = True
        self._closed = _start(self._core.close)

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {
            "peername": self._core.peername,
            "sockname": self._core.sockname,
            "conv": self._core.conv,
        }
        return info.get(name, default)

    @property
    def transport(self) -> None:
        return None


def _split_host(host: Optional[str]) -> str:
    return "0.0.0.0" if host in (None, "") else str(host)


async def open_connection(
    host: str, port: int, *, config: Optional[_core.Config] = None
) -> Tuple[StreamReader, StreamWriter]:
    """Dials ``host:port``; returns ``(reader, writer)``. Nothing is sent
    until the first write (KCP has no handshake)."""
    core = await _start(_core._dial, str(host), int(port), config)
    reader = StreamReader(core)
    return reader, StreamWriter(core, reader)


class _SocketInfo:
    """Stands in for :attr:`asyncio.Server.sockets` entries."""

    def __init__(self, addr: Tuple[str, int]) -> None:
        self._addr = addr

    def getsockname(self) -> Tuple[str, int]:
        return self._addr


class Server:
    """A KCP server like :class:`asyncio.Server`."""

    def __init__(
        self,
        core: Any,
        cb: Callable[[StreamReader, StreamWriter], Union[Awaitable[None], None]],
    ) -> None:
        self._core = core
        self._cb = cb
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self._handlers: "set[asyncio.Task[Any]]" = set()
        self._accepting = self._loop.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        try:
            while True:
                try:
                    core = await _start(self._core.accept)
                except OSError:
                    return  # the listener was closed
                reader = StreamReader(core)
                writer = StreamWriter(core, reader)
                res = self._cb(reader, writer)
                if inspect.isawaitable(res):
                    task = self._loop.create_task(res)  # type: ignore[arg-type]
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    @property
    def address(self) -> Tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._core.sockname

    @property
    def sockets(self) -> Tuple[_SocketInfo, ...]:
        return () if self._closed.done() else (_SocketInfo(self._core.sockname),)

    def is_serving(self) -> bool:
        return not self._closed.done()

    def close(self) -> None:
        """Stops accepting; sessions already accepted keep working."""
        self._core.close()
        self._accepting.cancel()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        """Serves until :meth:`close` (or cancellation, which closes)."""
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            self.close()
            raise

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    client_connected_cb: Callable[[StreamReader, StreamWriter], Union[Awaitable[None], None]],
    host: Optional[str] = None,
    port: int = 0,
    *,
    config: Optional[_core.Config] = None,
) -> Server:
    """Listens on ``host:port`` (port 0 picks one: see ``server.address``)
    and calls ``client_connected_cb(reader, writer)`` for every new session."""
    core = await _start(_core._listen, _split_host(host), int(port), config)
    return Server(core, client_connected_cb)
