"""Which hosts Holdfast may call: providers (release ``base_url``) and tool backends.

Pure policy, shared by configsvc (admission of release and contract records) and the sidecar
(every upstream call, and again on every DNS answer at connect time, so a name that rebinds to
a metadata address is refused after resolution).

Without patterns (the default) any host name may be used, and an address is allowed when it is
loopback or public. Link-local (169.254.0.0/16, fe80::/10), metadata addresses and names
(``metadata.google.internal``…), unspecified, multicast and reserved addresses are never
allowed unless a pattern names them explicitly; private ranges (10/8, 172.16/12, 192.168/16,
100.64/10, fc00::/7) need a pattern too.

Patterns (``--allow-upstream-host``, repeatable) replace the default:

- ``api.openai.com``: that name; whatever it resolves to except the forbidden addresses
- ``*.openai.azure.com``: any name under that domain (not the domain itself), same rule
- ``10.0.0.0/8``, ``10.1.2.3``, ``fd00::/8``: addresses (IP literals in URLs, and DNS answers)
- ``*``: any name, resolving to loopback or public addresses (the default rule)
- ``loopback``: 127.0.0.0/8, ::1 and ``localhost``
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
FORBIDDEN_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure/OpenStack metadata
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
        "240.0.0.0/4",
    )
)
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MAX_PATTERNS: Final = 256
# URLs whose verdict is remembered: releases and contracts name few, and every request asks.
MAX_CACHED_URLS: Final = 1024


class HostRefused(ValueError):
    """A host or address the policy does not allow; the message says which rule refused it."""


class AddressRefused(OSError):
    """Every address a host resolved to is refused by the policy (``reason`` says why): raised
    by the connect-time resolvers (``holdfast.net.resolver``, the sidecar's provider client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refused_reason(exc: BaseException) -> str | None:
    """The policy's reason when ``exc`` (a connect error) came from a guarded resolver: found
    on the exception, its ``os_error`` (aiohttp's wrappers) or its causes."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, AddressRefused):
            return seen.reason
        inner = getattr(seen, "os_error", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return None


def _address(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _forbidden(addr: IPAddress) -> bool:
    return any(addr.version == net.version and addr in net for net in FORBIDDEN_NETWORKS)


def _public_or_loopback(addr: IPAddress) -> bool:
    return addr.is_loopback or addr.is_global


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """An allowlist of upstream hosts; ``HostPolicy()`` is the safe default."""

    patterns: tuple[str, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _any_name: bool = field(init=False, repr=False, compare=False)
    _verdicts: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} upstream host patterns")
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        any_name = not self.patterns
        for raw in self.patterns:
            pattern = raw.strip().lower().rstrip(".")
            if pattern == "*":
                any_name = True
            elif pattern == "loopback":
                names.update(LOOPBACK_NAMES)
                networks += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1")]
            elif pattern.startswith("*.") and _valid_name(pattern[2:]):
                suffixes.append(pattern[1:])
            elif _valid_name(pattern) and _address(pattern) is None and "/" not in pattern:
                names.add(pattern)
            else:
                try:
                    networks.append(ipaddress.ip_network(pattern.strip("[]"), strict=False))
                except ValueError as exc:
                    raise ValueError(
                        f"upstream host pattern {raw!r:.80} is not a host name, *.domain, "
                        "IP address, CIDR, 'loopback' or '*'"
                    ) from exc
        if not self.patterns:
            names.update(LOOPBACK_NAMES)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_suffixes", tuple(suffixes))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_any_name", any_name)
        object.__setattr__(self, "_verdicts", {})

    def _named(self, host: str) -> bool:
        return host in self._names or host.endswith(self._suffixes)

    def _listed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self._networks)

    def check_host(self, host: str) -> None:
        """The name (or IP literal) in a URL, before any DNS lookup."""
        name = host.strip().lower().rstrip(".")
        if not name:
            raise HostRefused("the URL has no host")
        addr = _address(name)
        if addr is not None:
            self.check_address(name, addr)
            return
        if name in METADATA_NAMES and name not in self._names:
            raise HostRefused(f"host {name!r} is a cloud metadata service")
        if not (self._any_name or self._named(name)):
            raise HostRefused(f"host {name!r} is not in the allowed upstream hosts")

    def check_address(self, host: str, addr: IPAddress | str) -> None:
        """An address the host resolved to (or an IP literal), at connect time."""
        ip = _address(addr) if isinstance(addr, str) else addr
        if ip is None:
            raise HostRefused(f"{addr!r:.80} is not an IP address")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self._listed(ip):
            return
        if _forbidden(ip):
            raise HostRefused(f"{host!r:.80} resolves to {ip}, a link-local/metadata address")
        name = host.strip().lower().rstrip(".")
        if _address(name) is None and self._named(name):
            return  # an explicitly allowed name may resolve to private addresses
        if self._any_name and _public_or_loopback(ip):
            return
        raise HostRefused(f"{host!r:.80} resolves to {ip}, which is not an allowed address")

    def check_url(self, url: str) -> None:
        """The URL's host, before any DNS lookup (remembered per URL: the policy never changes,
        and a name's addresses are checked again at every connect)."""
        verdict = self._verdicts.get(url)
        if verdict is None:
            try:
                host = urlsplit(url).hostname
                self.check_host(host or "")
            except ValueError as exc:  # HostRefused is a ValueError too
                verdict = (
                    str(exc)
                    if isinstance(exc, HostRefused)
                    else (f"URL {url!r:.120} cannot be parsed")
                )
            else:
                verdict = ""
            if len(self._verdicts) >= MAX_CACHED_URLS:
                self._verdicts.clear()
            self._verdicts[url] = verdict
        if verdict:
            raise HostRefused(verdict)


def _valid_name(text: str) -> bool:
    labels = text.split(".")
    return (
        0 < len(text) <= 253
        and all(0 < len(lab) <= 63 for lab in labels)
        and all(c.isalnum() or c in "-_" for lab in labels for c in lab)
    )


def policy_from(patterns: Iterable[str]) -> HostPolicy:
    """A policy from command-line patterns (an empty list gives the default)."""
    return HostPolicy(tuple(patterns))
