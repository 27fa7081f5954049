"""Python <-> kcp-go sessions: the Go peer of interop/ (cmd/gopeer) built with `go build`."""

import os
import pathlib
import queue
import shutil
import subprocess
import threading

import pytest

import kcp_session as k

ROOT = pathlib.Path(__file__).resolve().parents[2]
GO_KEY = "it's a secrect"  # interop/peer DefaultKey
TOTAL = 2 << 20
CASES = [("aes", 10, 3), ("salsa20", 0, 0)]


# The oldest and the newest kcp-go the project supports (interop/ modfiles):
# v5.7 changed the datagram limit (1472 bytes) and the FEC auto-tune.
GO_VERSIONS = [("v5.6.72", "go.mod"), ("v5.7.6", "go.v576.mod")]


@pytest.fixture(scope="session", params=GO_VERSIONS, ids=[v for v, _ in GO_VERSIONS])
def gopeer(request, tmp_path_factory):
    if shutil.which("go") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is not installed and CI must run the interop tests")
        pytest.skip("go is not installed")
    version, modfile = request.param
    out = tmp_path_factory.mktemp("gopeer") / f"gopeer-{version}"
    subprocess.run(["go", "build", f"-modfile={modfile}", "-o", str(out), "./cmd/gopeer"],
                   cwd=ROOT / "interop", check=True, timeout=300)
    return str(out)


def go_args(crypt, ds, ps):
    return ["--crypt", crypt, "--key", GO_KEY, "--datashard", str(ds), "--parityshard", str(ps), "--mode", "fast", "--timeout", "60"]


@pytest.mark.parametrize("crypt,ds,ps", CASES)
@pytest.mark.parametrize("size", [1, 70_000, 3 << 20])
def test_python_client_to_go_server(gopeer, crypt, ds, ps, size):
    srv = subprocess.Popen([gopeer, "--role", "echo-server", "--addr", "127.0.0.1:0", *go_args(crypt, ds, ps)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().split()
        assert line and line[0] == "LISTENING", line
        host, port = line[1].rsplit(":", 1)
        cfg = k.Config(crypt=crypt, key=GO_KEY, data_shards=ds, parity_shards=ps, mode="fast", stream=True)
        payload = os.urandom(size)
        with k.connect((host, int(port)), config=cfg, timeout=30) as c:
            c.settimeout(30)
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            out = bytearray()
            while len(out) < size:
                d = c.recv(65536)
                assert d, "EOF before the whole echo"
                out += d
            sender.join(30)
            assert bytes(out) == payload
    finally:
        srv.stdin.close()
        srv.wait(30)


@pytest.mark.parametrize("crypt,ds,ps", CASES)
def test_go_client_to_python_server(gopeer, crypt, ds, ps):
    cfg = k.Config(crypt=crypt, key=GO_KEY, data_shards=ds, parity_shards=ps, mode="fast", stream=True)
    with k.listen(("127.0.0.1", 0), config=cfg) as lst:
        lst.settimeout(30)
        host, port = lst.getsockname()[:2]
        errors = queue.Queue()

        def serve():
            try:
                s, _ = lst.accept()
                s.settimeout(30)
                got = 0
                while got < TOTAL:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += len(d)
                    s.sendall(d)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.put(e)

        # Not a daemon: one killed at interpreter exit inside the extension aborts the process.
        t = threading.Thread(target=serve)
        t.start()
        r = subprocess.run([gopeer, "--role", "echo-client", "--addr", f"{host}:{port}", "--bytes", str(TOTAL),
                            *go_args(crypt, ds, ps)], capture_output=True, text=True, timeout=90)
        t.join(30)
        assert not t.is_alive()
        assert errors.empty(), errors.get()
        assert "ok=true" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("crypt,ds,ps", CASES)
@pytest.mark.parametrize("size", [1, 1 << 20])
def test_asyncio_client_to_go_server(gopeer, crypt, ds, ps, size):
    import asyncio

    srv = subprocess.Popen([gopeer, "--role", "echo-server", "--addr", "127.0.0.1:0", *go_args(crypt, ds, ps)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().split()
        assert line and line[0] == "LISTENING", line
        host, port = line[1].rsplit(":", 1)
        cfg = k.Config(crypt=crypt, key=GO_KEY, data_shards=ds, parity_shards=ps, mode="fast", stream=True)
        payload = os.urandom(size)

        async def run():
            reader, writer = await k.open_connection(host, int(port), config=cfg)

            async def send():
                for i in range(0, size, 32768):
                    writer.write(payload[i:i + 32768])
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            got = await asyncio.wait_for(reader.readexactly(size), 30)
            await sender
            writer.close()
            await writer.wait_closed()
            return got

        assert asyncio.run(run()) == payload
    finally:
        srv.stdin.close()
        srv.wait(30)


@pytest.mark.parametrize("crypt,ds,ps", CASES)
def test_go_client_to_asyncio_server(gopeer, crypt, ds, ps):
    import asyncio

    cfg = k.Config(crypt=crypt, key=GO_KEY, data_shards=ds, parity_shards=ps, mode="fast", stream=True)

    async def run():
        echoed = 0

        async def handler(reader, writer):
            nonlocal echoed
            while echoed < TOTAL:
                d = await reader.read(65536)
                if not d:
                    break
                echoed += len(d)
                writer.write(d)
                await writer.drain()

        server = await k.start_server(handler, "127.0.0.1", 0, config=cfg)
        host, port = server.address[:2]
        proc = await asyncio.create_subprocess_exec(
            gopeer, "--role", "echo-client", "--addr", f"{host}:{port}", "--bytes", str(TOTAL),
            *go_args(crypt, ds, ps), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        server.close()
        await server.wait_closed()
        return out.decode() + err.decode(), echoed

    text, echoed = asyncio.run(run())
    assert "ok=true" in text, text
    assert echoed == TOTAL
