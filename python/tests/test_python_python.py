"""Python <-> Python sessions over loopback, both APIs (no Go peer needed)."""

import asyncio
import os
import threading
import time

import pytest

import kcp_session as k

CFG = k.Config(crypt="aes", key="py-test", data_shards=10, parity_shards=3, mode="fast", stream=True)


@pytest.mark.parametrize("size", [1, 1000, 70_000, 1 << 20])
def test_blocking_echo(size):
    payload = os.urandom(size)
    with k.listen(("127.0.0.1", 0), config=CFG) as lst:
        lst.settimeout(10)
        addr = lst.getsockname()

        def serve():
            s, _ = lst.accept()
            s.settimeout(10)
            got = 0
            while got < size:
                d = s.recv(65536)
                assert d
                got += len(d)
                s.sendall(d)
            s.drain()

        t = threading.Thread(target=serve)
        t.start()
        with k.connect(addr, config=CFG, timeout=10) as c:
            # Send from another thread: the echo comes back while we send.
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            out = bytearray()
            while len(out) < size:
                out += c.recv(65536)
            assert bytes(out) == payload
            sender.join(10)
        t.join(10)
        assert not t.is_alive()


def test_blocking_timeout_and_nonblocking():
    with k.listen(("127.0.0.1", 0), config=CFG) as lst:
        with k.connect(lst.getsockname(), config=CFG) as c:
            c.settimeout(0.3)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                c.recv(10)
            assert 0.25 <= time.monotonic() - t0 < 5
            c.setblocking(False)
            assert c.gettimeout() == 0.0
            assert c.recv(10) == b""
            assert not c.eof
            c.sendall(b"x")
            lst.settimeout(5)
            s, _ = lst.accept()
            s.sendall(b"pong")
            deadline = time.monotonic() + 5
            got = b""
            while not got and time.monotonic() < deadline:
                got = c.recv(10)
                time.sleep(0.01)
            assert got == b"pong"
            s.close()


@pytest.mark.parametrize("size", [1, 70_000, 1 << 20])
def test_asyncio_echo(size):
    payload = os.urandom(size)

    async def main():
        async def handle(r, w):
            while d := await r.read(65536):
                w.write(d)
                await w.drain()

        srv = await k.start_server(handle, "127.0.0.1", 0, config=CFG)
        r, w = await k.open_connection(*srv.address, config=CFG)
        assert w.get_extra_info("peername") == srv.address
        w.write(payload)
        # Read the echo while the rest is still being sent (windows are small).
        got, _ = await asyncio.wait_for(asyncio.gather(r.readexactly(size), w.drain()), 20)
        assert got == payload
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()

    asyncio.run(main())


def test_asyncio_cancelled_read_loses_nothing():
    async def main():
        got = asyncio.Queue()

        async def handle(r, w):
            await got.put((r, w))

        srv = await k.start_server(handle, "127.0.0.1", 0, config=CFG)
        r, w = await k.open_connection(*srv.address, config=CFG)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.read(10), 0.2)
        w.write(b"hello\n")
        sr, sw = await asyncio.wait_for(got.get(), 5)
        assert await asyncio.wait_for(sr.readline(), 5) == b"hello\n"
        sw.write(b"back")
        await sw.drain()
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"back"
        w.close()
        sw.close()
        srv.close()
        await srv.wait_closed()

    asyncio.run(main())
