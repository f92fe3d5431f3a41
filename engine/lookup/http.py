"""One small JSON-over-HTTP client with retries, shared by the outside-service clients.

Retries cover what a busy or flaky service does: timeouts, dropped
connections, 429 (honouring Retry-After) and 5xx. Anything else is answered
at once. The caller names the service so errors say where they came from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from engine import __version__
from engine.errors import CampaignError, NetworkUnavailable

USER_AGENT = f"campaign-engine/{__version__}"


class JsonClient:
    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        timeout: float = 10.0,
        tries: int = 5,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.sleep = sleep
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) for any status below 500 other than 429."""
        url = self.base_url + path
        last = ""
        retry_after: str | None = None
        for attempt in range(self.tries):
            if attempt:
                self.sleep(self._delay(attempt, retry_after))
                retry_after = None
            with self._count_lock:
                self.requests_made += 1
            try:
                response = self.session.request(method, url, json=json, params=params, timeout=self.timeout)
            except requests.Timeout:
                last = "timed out"
                continue
            except requests.ConnectionError:
                last = "could not connect"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
                continue
            try:
                return response.status_code, response.json()
            except ValueError:
                raise CampaignError(
                    f"{self.service}: HTTP {response.status_code} with a body that is not JSON from {url}"
                ) from None
        raise NetworkUnavailable(f"{self.service}: {last} after {self.tries} tries ({url})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), 60.0)
        return self.backoff * 2 ** (attempt - 1)
