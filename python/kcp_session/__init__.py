"""kcp-go-compatible KCP sessions for Python (bindings of the Rust crate kcp-session).

Two APIs over the same wire (kcp-go v5 / kcptun: every cipher, FEC, modes):

* asyncio, shaped like :func:`asyncio.open_connection` / :func:`asyncio.start_server`:
  :func:`open_connection`, :func:`start_server`;
* blocking, socket-like: :func:`connect`, :func:`listen`.
"""

import atexit

from . import _kcp_session
from ._kcp_session import CIPHERS, Config, Listener, Socket, connect, kcptun_key, listen
from ._aio import Server, StreamReader, StreamWriter, open_connection, start_server

# The Rust runtime thread must stop before the interpreter finalizes
# (see `_shutdown` in python/src/lib.rs).
atexit.register(_kcp_session._shutdown)

__all__ = [
    "CIPHERS",
    "Config",
    "Listener",
    "Server",
    "Socket",
    "StreamReader",
    "StreamWriter",
    "connect",
    "kcptun_key",
    "listen",
    "open_connection",
    "start_server",
]
