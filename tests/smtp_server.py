"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what arrives and can refuse on cue."""

from __future__ import annotations

import email
import socket
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Recorder:
    received: list[Received] = field(default_factory=list)
    # recipient address → SMTP reply given at RCPT instead of accepting
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_all: str | None = None
    delay: float = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.refuse.get(address) or self.refuse_all
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)  # a slow relay, so a test can kill a worker mid-batch
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 queued as test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpServer:
    def __init__(self, port: int | None = None, **smtp_options: object):
        """`smtp_options` go to aiosmtpd's SMTP server, e.g. data_size_limit=20_000 for a relay
        that takes no larger message; `port`: a relay back on a stopped one's address."""
        self.recorder = Recorder()
        self.port = port or free_port()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **smtp_options)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
