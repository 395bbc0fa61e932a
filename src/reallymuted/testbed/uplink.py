"""An internet uplink for one session's network namespace (the web drivers' sessions).

A testbed namespace has only loopback. A real web app (``source`` = ``web``) must reach its
vendor's servers, so for a driver that declares ``network = "internet"`` the supervisor adds,
to that session's namespace only:

* a veth pair: ``rmu-<id>`` in the host namespace, ``uplink0`` inside, on a /30 of
  10.231.0.0/16 chosen from the namespace name, with the default route through the host side;
* NAT: an nftables table of its own (``reallymuted_<id>``) masquerading the namespace's address
  out of the host's default-route interface (the egress), accepting its forwarded traffic
  there and dropping whatever it would send anywhere else, plus
  ``net.ipv4.ip_forward=1`` (restored afterwards if this session turned it on);
* DNS: ``/etc/netns/<namespace>/resolv.conf`` (``ip netns exec`` mounts it over
  ``/etc/resolv.conf``) with the host's upstream resolvers, or the driver option ``dns``.

The capture then runs on ``uplink0`` inside the namespace: every packet of the client and
nothing else of the host, as on the testbed. Everything added is removed with the session
(the table, the veth pair, the resolv.conf directory).

Before any of that, :func:`internet_problem` checks from the host that the app's server can be
resolved and reached with a verified TLS handshake (a firewall that accepts every TCP
connection does not pass), so a machine without internet refuses the session at preflight.
``reallymuted audit`` gives the namespace of the app it audits the same uplink (with the
options ``egress`` and ``dns``); its tests run the NAT path for real, towards a peer namespace
on the same machine. Not yet run on a host with internet access.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reallymuted.testbed.drivers import Driver

NS_IF = "uplink0"
SUBNET = ipaddress.ip_network("10.231.0.0/16")
NETNS_ETC = Path("/etc/netns")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class UplinkProblem(RuntimeError):
    """The session cannot have an uplink here (no internet, no nft, no default route)."""


def internet_problem(hosts: Iterable[str], timeout: float = 5.0) -> str | None:
    """Why ``hosts`` cannot be reached over HTTPS from here (None: every one can)."""
    context = ssl.create_default_context()
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"cannot resolve {host} ({exc}): this host has no working DNS to the internet"
        address = infos[0][4]
        try:
            with (
                socket.create_connection(address[:2], timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                pass
        except (OSError, ssl.SSLError) as exc:
            return f"cannot open a verified TLS connection to {host}:443 ({exc})"
    return None


@dataclass(frozen=True)
class Plan:
    """Names and addresses of one namespace's uplink."""

    netns: str
    host_if: str
    host_addr: str  # with prefix, e.g. 10.231.7.1/30
    ns_addr: str
    table: str

    @property
    def gateway(self) -> str:
        return self.host_addr.split("/")[0]

    @property
    def source(self) -> str:
        return self.ns_addr.split("/")[0]


def plan(netns: str) -> Plan:
    """A deterministic /30 and names for ``netns`` (veth names must be < 16 characters)."""
    digest = int(hashlib.sha256(netns.encode()).hexdigest(), 16)
    block = digest % (SUBNET.num_addresses // 4)
    base = SUBNET.network_address + 4 * block
    tag = f"{digest % 16**6:06x}"
    return Plan(
        netns=netns,
        host_if=f"rmu-{tag}",
        host_addr=f"{base + 1}/30",
        ns_addr=f"{base + 2}/30",
        table=f"reallymuted_{tag}",
    )


def up_commands(p: Plan, egress: str) -> list[list[str]]:
    """The commands that give the namespace its uplink, in order."""
    ns = ["ip", "-n", p.netns]
    nft = ["nft"]
    return [
        ["ip", "link", "add", p.host_if, "type", "veth", "peer", "name", NS_IF, "netns", p.netns],
        ["ip", "addr", "add", p.host_addr, "dev", p.host_if],
        ["ip", "link", "set", p.host_if, "up"],
        [*ns, "addr", "add", p.ns_addr, "dev", NS_IF],
        [*ns, "link", "set", NS_IF, "up"],
        [*ns, "route", "add", "default", "via", p.gateway],
        [*nft, "add", "table", "ip", p.table],
        [*nft, "add", "chain", "ip", p.table, "post",
         "{ type nat hook postrouting priority srcnat; policy accept; }"],
        [*nft, "add", "rule", "ip", p.table, "post", "ip", "saddr", p.source, "oifname", egress,
         "masquerade"],
        [*nft, "add", "chain", "ip", p.table, "accepted",
         "{ type filter hook forward priority filter; policy accept; }"],
        [*nft, "add", "rule", "ip", p.table, "accepted", "iifname", p.host_if, "oifname", egress,
         "accept"],
        # the namespace's only way out is the egress: nothing is routed anywhere else
        [*nft, "add", "rule", "ip", p.table, "accepted", "iifname", p.host_if, "drop"],
        [*nft, "add", "rule", "ip", p.table, "accepted", "oifname", p.host_if, "ct", "state",
         "established,related", "accept"],
    ]  # fmt: skip


def down_commands(p: Plan) -> list[list[str]]:
    """The commands that remove it (each may fail harmlessly if already gone)."""
    return [["nft", "delete", "table", "ip", p.table], ["ip", "link", "del", p.host_if]]


def default_egress() -> str:
    """The host interface of the default route."""
    out = subprocess.run(
        ["ip", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=False
    ).stdout.split()
    if "dev" not in out:
        raise UplinkProblem("the host has no default route: no internet for the session")
    return out[out.index("dev") + 1]


def resolvers(
    options: Mapping[str, Any], resolv_conf: Path = Path("/etc/resolv.conf")
) -> list[str]:
    """Name servers the namespace can use: the option ``dns``, else the host's upstream ones.

    A resolver on the host's loopback (systemd-resolved's 127.0.0.53) is not reachable from
    the namespace: then systemd-resolved's upstream list is used, or the option is needed.
    """
    if options.get("dns"):
        return [str(s) for s in options["dns"]]
    candidates = [resolv_conf, Path("/run/systemd/resolve/resolv.conf")]
    for path in candidates:
        with contextlib.suppress(OSError):
            servers = [
                line.split()[1]
                for line in path.read_text().splitlines()
                if line.startswith("nameserver") and len(line.split()) > 1
            ]
            usable = [s for s in servers if not ipaddress.ip_address(s.split("%")[0]).is_loopback]
            if usable:
                return usable
    raise UplinkProblem(
        "the host's resolvers are on loopback only, unreachable from the session's namespace; "
        "set the driver option `dns` (e.g. [9.9.9.9])"
    )


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UplinkProblem(f"{' '.join(argv)}: {result.stderr.strip()}")


def preflight() -> None:
    """The tools the uplink needs exist here."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise UplinkProblem(f"missing program(s) {', '.join(missing)} for the session's uplink")


def attach(netns: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Give ``netns`` its uplink (see the module docstring); return what was done."""
    p = plan(netns)
    egress = str(options.get("egress") or default_egress())
    servers = resolvers(options)
    facts: dict[str, Any] = {"interface": NS_IF, "host_if": p.host_if, "ns_addr": p.ns_addr}
    facts.update(egress=egress, nft_table=p.table, dns=servers)
    try:
        for argv in up_commands(p, egress):
            _run(argv)
        facts["ip_forward_was"] = FORWARD.read_text().strip()
        if facts["ip_forward_was"] != "1":
            FORWARD.write_text("1\n")
        etc = NETNS_ETC / netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("".join(f"nameserver {s}\n" for s in servers))
    except BaseException:
        detach(netns, facts)
        raise
    return facts


def detach(netns: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Remove everything :func:`attach` added (whatever of it exists)."""
    p = plan(netns)
    removed: dict[str, Any] = {}
    for argv in down_commands(p):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        removed[argv[-1]] = result.returncode == 0
    if facts.get("ip_forward_was") == "0":
        FORWARD.write_text("0\n")
        removed["ip_forward"] = "restored to 0"
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
    return removed


def required(driver: type[Driver], options: Mapping[str, Any]) -> bool:
    """Whether ``driver``'s sessions get an uplink; refuses at once if it cannot have one.

    Called at the testbed supervisor's preflight: a driver declaring ``network = "internet"``
    fails there, with the reason, on a machine that cannot reach its app's servers.
    """
    if getattr(driver, "network", "loopback") != "internet":
        return False
    problem = internet_problem(driver.internet_hosts(options))  # type: ignore[attr-defined]
    if problem:
        raise UplinkProblem(f"driver {driver.name} needs internet access: {problem}")
    preflight()
    return True
