"""Who may talk to the policy server: loopback by default, CurveZMQ with allow-listed client keys otherwise.

Key folder layout (`inril-robot keys generate DIR`):

    DIR/server.key            the server's public key (copy it to every robot PC)
    DIR/server.key_secret     the server's secret key (stays on the GPU box)
    DIR/<robot>.key           a robot's public key
    DIR/<robot>.key_secret    its secret key (copy it to that robot PC only)
    DIR/authorized/<robot>.key   the public keys the server accepts (the allow list)

The server authenticates clients through a ZAP handler (`zmq.auth.thread.ThreadAuthenticator`): a client whose key
is not in `authorized/` never completes the CURVE handshake, so it cannot send a single message, let alone receive
an action; its side sees ZMQ's handshake-failed-auth event (the agent reports it by name).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class SecurityError(RuntimeError):
    """The server or client cannot start securely; the message says what to do."""


def is_local(endpoint: str) -> bool:
    """True for ipc:// and inproc:// endpoints and TCP on a loopback address (not 0.0.0.0, *, or a NIC)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = urlsplit(f"//{rest}").hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def generate(folder: Path, names: list[str]) -> list[Path]:
    """A server key pair (if missing) and one pair per robot name, each robot's public key allow-listed."""
    if not zmq.has("curve"):
        raise SecurityError("this libzmq has no CURVE support: pip install --force-reinstall pyzmq")
    folder = Path(folder)
    authorized = folder / "authorized"
    authorized.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in ["server", *names]:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise SecurityError(f"key name {name!r}: use letters, digits, '-' and '_'")
        public = folder / f"{name}.key"
        if public.exists():
            if name != "server":
                raise SecurityError(f"{public} exists: pick another robot name or delete the old pair")
            continue
        pub, sec = zmq.auth.create_certificates(str(folder), name)
        Path(sec).chmod(0o600)
        written += [Path(pub), Path(sec)]
        if name != "server":
            shutil.copy(pub, authorized / f"{name}.key")
            written.append(authorized / f"{name}.key")
    return written


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise SecurityError(f"key file not found: {path} (create keys with `inril-robot keys generate DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise SecurityError(f"{path} is not a ZMQ certificate: {e}") from e
    if need_secret and not secret:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def server_keys(folder: Path) -> ServerKeys:
    public, secret = _load(Path(folder) / "server.key_secret", need_secret=True)
    authorized = Path(folder) / "authorized"
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise SecurityError(f"{authorized} holds no client public keys: no robot could connect "
                            "(`inril-robot keys generate DIR --robot NAME` allow-lists one)")
    assert secret is not None
    return ServerKeys(public, secret, authorized)


def client_keys(client_secret: Path, server_public: Path) -> ClientKeys:
    public, secret = _load(Path(client_secret), need_secret=True)
    server, _ = _load(Path(server_public), need_secret=False)
    assert secret is not None
    return ClientKeys(public, secret, server)


def check_bind(endpoint: str, keys: ServerKeys | None) -> None:
    """Refuse to expose the server beyond this machine without CurveZMQ."""
    if keys is None and not is_local(endpoint):
        raise SecurityError(f"refusing to bind {endpoint} without authentication: a non-loopback address needs "
                            "CurveZMQ keys (`inril-robot keys generate DIR --robot NAME`, then `serve --keys DIR`), "
                            "or bind tcp://127.0.0.1:PORT")


def secure_server(ctx: zmq.Context, socket: zmq.Socket, keys: ServerKeys) -> ThreadAuthenticator:
    """Make `socket` a CURVE server accepting only the allow-listed client keys; returns the running ZAP handler."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public
