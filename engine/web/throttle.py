"""Turning away a client that keeps presenting wrong links, without ever holding a request.

A guessed link is found by no one (132-bit tokens), but a client trying
thousands must not cost the server either: a few wrong links are free, then
the client is shut out for a while and answered 429 at once, whatever link it
presents, while everyone else is served as usual. Behind a reverse proxy, the
client is the address the trusted proxies report in X-Forwarded-For, so
members sharing one proxy are never shut out together.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from engine.settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Client:
    __slots__ = ("misses", "until")

    def __init__(self, remember: int):
        self.misses: deque[float] = deque(maxlen=remember)
        self.until = 0.0


class GuessThrottle:
    """The `free`-th wrong link within `window` seconds shuts the client out for a second, and
    each one after that twice as long as the last (2 s, 4 s … at most `max_block`). Remembers
    at most `max_clients` clients, forgetting the one seen least recently first."""

    def __init__(
        self,
        free: int = 5,
        window: float = 600.0,
        max_block: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free, self.window, self.max_block, self.max_clients = free, window, max_block, max_clients
        self._clock = clock
        # Enough misses to reach max_block; more change nothing.
        self._remember = max(1, free + math.ceil(math.log2(max(max_block, 1.0))) + 1)
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Whole seconds before this client may present a link again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            state = self._clients.get(client)
            if state is None or state.until <= now:
                return 0
            return max(1, math.ceil(state.until - now))

    def miss(self, client: str) -> None:
        """Record a wrong link from this client."""
        now = self._clock()
        with self._lock:
            state = self._clients.pop(client, None) or _Client(self._remember)
            self._clients[client] = state  # now the most recently seen
            while state.misses and now - state.misses[0] > self.window:
                state.misses.popleft()
            state.misses.append(now)
            beyond = len(state.misses) - self.free
            if beyond >= 0:
                state.until = now + min(2.0**beyond, self.max_block)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    def __len__(self) -> int:
        return len(self._clients)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """Who is asking, for the throttle: the connecting address, unless that is a trusted proxy;
    then the right-most X-Forwarded-For address that is not one (a client can write anything
    to the left of what our proxies add, so those entries are never believed)."""
    if peer is None:
        return "unknown"
    if not _is_trusted(peer, trusted):
        return _key(peer)
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return _key(hop)
    # Every hop is one of ours (or there is no header): the earliest is the client.
    return _key(hops[0] if hops else peer)


def _parse(text: str) -> Address | None:
    """An address as proxies write it: bare, or with a port ('192.0.2.1:443', '[2001:db8::1]:443')."""
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _is_trusted(text: str, trusted: tuple[Network, ...]) -> bool:
    address = _parse(text)
    return address is not None and any(address in network for network in trusted)


def _key(text: str) -> str:
    address = _parse(text)
    if address is None:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        # One IPv6 host is usually given a whole /64: counting its addresses one by one would
        # let it present 2^64 fresh identities.
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
