"""Who may talk to the policy server: loopback by default, CurveZMQ with allow-listed client keys otherwise.

Key folder layout (`inril-robot keys generate DIR`):

    DIR/server.key            the server's public key (copy it to every robot PC)
    DIR/server.key_secret     the server's secret key (stays on the GPU box)
    DIR/<robot>.key           a robot's public key
    DIR/<robot>.key_secret    its secret key (copy it to that robot PC only)
    DIR/authorized/<robot>.key   the public keys the server accepts (the allow list)

The server authenticates clients through a ZAP handler (`zmq.auth.thread.ThreadAuthenticator`) that asks the
`AllowList`: a client whose key is not in `authorized/` never completes the CURVE handshake, so it cannot send a single
message, let alone receive an action; its side sees ZMQ's handshake-failed-auth event (the agent reports it by name).
The allow list maps each key to the robot id it may use (the file's stem: `authorized/arm1.key` may only say
`hello` as `arm1`); it is re-read when the folder changes, so removing a file revokes that key without a restart.

Key hygiene is refused, not warned about: a secret key file that is a symlink or readable by group/others, or a key
folder (or `authorized/`) writable by group/others, stops the server (and the robot's client) with a line naming the
file and the `chmod` that fixes it; an unreadable or empty `authorized/` entry is an error naming the file.
"""

from __future__ import annotations

import shutil
import stat
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from inril_robot.core.errors import InrilError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class SecurityError(RuntimeError, InrilError):
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
    if need_secret:
        _check_secret_file(path)
    if not path.is_file():
        raise SecurityError(f"key file not found: {path} (create keys with `inril-robot keys generate DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise SecurityError(f"{path} is not a ZMQ certificate: {e}") from e
    if need_secret and not secret:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def _check_secret_file(path: Path) -> None:
    if path.is_symlink():
        raise SecurityError(f"secret key {path} is a symlink: copy the file itself there (chmod 600)")
    if path.is_file() and path.stat().st_mode & 0o077:
        mode = stat.filemode(path.stat().st_mode)
        raise SecurityError(f"secret key {path} is readable by group/others (mode {mode}): chmod 600 {path}")


def _check_folder(folder: Path) -> None:
    if folder.is_dir() and folder.stat().st_mode & 0o022:
        raise SecurityError(
            f"key folder {folder} is writable by group/others (mode "
            f"{stat.filemode(folder.stat().st_mode)}): anyone could add a key; chmod go-w {folder}"
        )


def server_keys(folder: Path) -> ServerKeys:
    folder = Path(folder)
    _check_folder(folder)
    public, secret = _load(folder / "server.key_secret", need_secret=True)
    authorized = folder / "authorized"
    _check_folder(authorized)
    AllowList(authorized).load()  # every entry readable, at least one key
    assert secret is not None
    return ServerKeys(public, secret, authorized)


def client_keys(client_secret: Path, server_public: Path) -> ClientKeys:
    public, secret = _load(Path(client_secret), need_secret=True)
    server, _ = _load(Path(server_public), need_secret=False)
    assert secret is not None
    return ClientKeys(public, secret, server)


class AllowList:
    """The CURVE allow list: z85 public key -> the robot id it may use (the stem of `authorized/<robot>.key`).

    The ZAP thread calls `callback` for each handshake; the serving loop calls `refresh` about once a second, which
    re-reads the folder when it changed (a removed file revokes its key for new handshakes, and the server drops the
    key's live session). Refused handshakes are counted here and summarised by the server (`take_refused`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.keys: dict[bytes, str] = {}
        self._signature: tuple = ()
        self._lock = threading.Lock()
        self._refused = 0
        self._refused_keys: deque[str] = deque(maxlen=8)

    def _scan_signature(self) -> tuple:
        try:
            entries = sorted(self.folder.glob("*.key"))
            return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in entries)
        except OSError:
            return ()

    def load(self, strict: bool = True) -> list[str]:
        """Read every entry. `strict`: an unreadable or empty entry raises (naming it); otherwise it is skipped and
        its error returned (a bad file must not disable every other robot)."""
        if not self.folder.is_dir():
            raise SecurityError(
                f"{self.folder} does not exist: no robot could connect "
                "(`inril-robot keys generate DIR --robot NAME` allow-lists one)"
            )
        signature = self._scan_signature()
        keys: dict[bytes, str] = {}
        errors: list[str] = []
        for path in sorted(self.folder.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(path))
                if not public:
                    raise ValueError("no public key in it")
            except (ValueError, OSError) as e:
                errors.append(f"allow-list entry {path} is unreadable or not a ZMQ public key: {e}")
                continue
            if public in keys:
                errors.append(f"allow-list entry {path} repeats the key of {keys[public]!r}")
                continue
            keys[public] = path.stem
        if strict and errors:
            raise SecurityError(errors[0])
        if strict and not keys:
            raise SecurityError(
                f"{self.folder} holds no client public keys: no robot could connect "
                "(`inril-robot keys generate DIR --robot NAME` allow-lists one)"
            )
        self.keys, self._signature = keys, signature
        return errors

    def refresh(self) -> tuple[bool, list[str]]:
        """Re-read the folder if it changed: (changed, errors naming skipped files)."""
        if self._scan_signature() == self._signature:
            return False, []
        try:
            return True, self.load(strict=False)
        except SecurityError as e:
            self.keys = {}
            return True, [str(e)]

    def robot_for(self, z85_key: str | bytes | None) -> str | None:
        if not z85_key:
            return None
        key = z85_key.encode() if isinstance(z85_key, str) else z85_key
        return self.keys.get(key)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: may this z85 public key complete the handshake?"""
        if key in self.keys:
            return True
        with self._lock:
            self._refused += 1
            self._refused_keys.append(key.decode(errors="replace")[:12])
        return False

    def take_refused(self) -> tuple[int, list[str]]:
        """Handshakes refused since the last call, and a few of their key prefixes."""
        with self._lock:
            n, keys = self._refused, list(dict.fromkeys(self._refused_keys))
            self._refused = 0
            self._refused_keys.clear()
        return n, keys


def check_bind(endpoint: str, keys: ServerKeys | None) -> None:
    """Refuse to expose the server beyond this machine without CurveZMQ."""
    if keys is None and not is_local(endpoint):
        raise SecurityError(
            f"refusing to bind {endpoint} without authentication: a non-loopback address needs "
            "CurveZMQ keys (`inril-robot keys generate DIR --robot NAME`, then `serve --keys DIR`), "
            "or bind tcp://127.0.0.1:PORT"
        )


def secure_server(ctx: zmq.Context, socket: zmq.Socket, keys: ServerKeys, allow: AllowList) -> ThreadAuthenticator:
    """Make `socket` a CURVE server accepting only the keys of `allow`; returns the running ZAP handler."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public
