"""A real IMAP server for the tests: Debian's Dovecot on 127.0.0.1, IMAPS with a test CA (trustme).

Each use gets its own configuration, state and mail folders under a temporary
directory and its own port, so it never touches a system Dovecot. A small TCP
relay in front of it can cut the connection after a number of bytes, to drop
a client in the middle of a fetch.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import trustme
from smtp_server import free_port

USER, PASSWORD = "organising", "correct horse battery staple"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class Dovecot:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))

    def _config(self) -> Path:
        root = self.root
        me = pwd.getpwuid(os.getuid())
        if os.getuid() == 0:
            # Dovecot refuses to run mail access or logins as root: use its own users.
            internal, login, mail = "dovecot", "dovenull", pwd.getpwnam("nobody")
        else:
            internal = login = me.pw_name
            mail = me
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(exist_ok=True)
        if os.getuid() == 0:
            os.chown(root / "mail", mail.pw_uid, mail.pw_gid)
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        config = root / "dovecot.conf"
        config.write_text(
            f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1
ssl = required
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
        )
        return config

    def start(self) -> Dovecot:
        binary = dovecot_binary()
        assert binary is not None
        config = self._config()
        with open(self.root / "stdout.log", "wb") as output:
            self.process = subprocess.Popen(
                [binary, "-F", "-c", str(config)], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = (self.root / "stdout.log").read_text(errors="replace")
                log = (self.root / "dovecot.log").read_text() if (self.root / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot stopped: {output}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def url(self, port: int | None = None, folder: str = "INBOX") -> str:
        return f"imaps://{USER}@127.0.0.1:{port or self.port}/{folder}"

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=20)
        conn.login(USER, PASSWORD)
        return conn

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        conn = self.client()
        try:
            for data in messages:
                typ, _ = conn.append(folder, None, None, data)
                assert typ == "OK"
        finally:
            conn.logout()


class CuttingRelay:
    """Relays TCP to `port`, cutting each connection once `limit` bytes have come back from the server."""

    def __init__(self, port: int, limit: int):
        self.target = port
        self.limit = limit
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.cut = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.limit), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    break
                if limit is not None and passed + len(data) > limit:
                    sink.sendall(data[: limit - passed])
                    self.cut.set()
                    break
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()
