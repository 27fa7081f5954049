"""The interpreter exits cleanly with asyncio sessions still open.

The bindings' tokio worker calls into Python to complete asyncio futures; if
it is still running when the interpreter finalizes, the process aborts
("FATAL: exception not rethrown"). Each run below leaves live sessions, a
read in flight and a server open when the script ends.
"""

import subprocess
import sys

SCRIPT = r"""
import asyncio, os
import kcp_session as k

CFG = k.Config(crypt="aes", key="exit-test", data_shards=10, parity_shards=3, mode="fast3")

async def main():
    async def handler(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()

    server = await k.start_server(handler, "127.0.0.1", 0, config=CFG)
    host, port = server.address[:2]
    readers = []
    for _ in range(8):
        r, w = await k.open_connection(host, port, config=CFG)
        w.write(os.urandom(50_000))
        await w.drain()
        readers.append((r, w))
    # Reads in flight while the echo streams back, then leave everything open.
    pending = [asyncio.ensure_future(r.read(1 << 20)) for r, _ in readers]
    await asyncio.sleep(0.05)
    print("ok", flush=True)

asyncio.run(main())
"""


def test_exit_with_open_sessions_is_clean():
    for run in range(6):
        p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
        assert "ok" in p.stdout, f"run {run}: {p.stdout!r} {p.stderr!r}"
        assert "FATAL" not in p.stderr, f"run {run}: {p.stderr}"
        assert p.returncode == 0, f"run {run}: exit {p.returncode}: {p.stderr}"
