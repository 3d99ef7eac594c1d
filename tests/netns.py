"""Test hosts in network namespaces, so that a partition is a real one (root, `ip`, `nft`).

Each host is a network namespace with one veth whose other end is a port of a bridge in the
root namespace; the bridge holds the subnet's first address, the hosts the next ones (one /24
per test run). Hosts reach each other over the bridge (layer 2: no IP forwarding to turn on
in the root namespace) and the root namespace through the bridge's address.

A partition drops every frame to and from a host without an answer (no RST, no ICMP): nft rules
in a table of this run, in the bridge family (host to host) and the inet family (host to the
root namespace). Peers see a black hole, as with a cut cable or a dead switch port, and only
their own timeouts tell them. Heal deletes the rules.

Names carry the test process's pid, so parallel runs do not clash, and `remove_stale` deletes
what runs that died without cleaning up left behind (their pid is gone).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

NETNS_PREFIX = "tcnet-"
# nft tables and links of a run: tcnet<pid>, tcb<pid> (the bridge), tcv<pid>x<i> (veths).
TABLE_PREFIX = "tcnet"
# Private /24s tried in turn, starting from one picked by the pid; one not routed yet is used.
SUBNET_BASE = ipaddress.ip_network("10.213.0.0/16")


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


@dataclass
class TestHost:
    """One network namespace with an address on the run's bridge."""

    __test__ = False  # not a pytest class

    netns: str
    address: str
    root_veth: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host (ip netns exec execs it: the pid is the program's)."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class TestHosts:
    """`count` hosts on one bridge; `close` removes all of it, also after a failed start."""

    __test__ = False  # not a pytest class

    count: int
    pid: int = field(default_factory=os.getpid)
    hosts: list[TestHost] = field(default_factory=list)
    partitioned: set[str] = field(default_factory=set)
    gateway: str = ""

    @property
    def bridge(self) -> str:
        return f"tcb{self.pid}"

    @property
    def table(self) -> str:
        return f"{TABLE_PREFIX}{self.pid}"

    def __enter__(self) -> TestHosts:
        return self.create()

    def __exit__(self, *_: object) -> None:
        self.close()

    def create(self) -> TestHosts:
        remove_stale()
        subnet = _free_subnet(self.pid)
        addresses = list(subnet.hosts())
        self.gateway = str(addresses[0])
        try:
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{self.gateway}/{subnet.prefixlen}", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
            for index in range(self.count):
                self.hosts.append(self._host(index, str(addresses[index + 1]), subnet.prefixlen))
            self._create_table()
        except BaseException:
            self.close()
            raise
        return self

    def _host(self, index: int, address: str, prefixlen: int) -> TestHost:
        netns = f"{NETNS_PREFIX}{self.pid}-{index}"
        root_veth, inner = f"tcv{self.pid}x{index}", f"tci{self.pid}x{index}"
        run("ip", "netns", "add", netns)
        host = TestHost(netns, address, root_veth)
        run("ip", "link", "add", root_veth, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", netns)
        run("ip", "-n", netns, "link", "set", inner, "name", "eth0")
        run("ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "link", "set", root_veth, "master", self.bridge)
        run("ip", "link", "set", root_veth, "up")
        return host

    def _create_table(self) -> None:
        # Empty chains now; partition() adds rules, heal() flushes them.
        for family, hooks in (("bridge", ("forward",)), ("inet", ("input", "output"))):
            run("nft", "add", "table", family, self.table)
            for hook in hooks:
                run(
                    "nft", "add", "chain", family, self.table, hook,
                    f"{{ type filter hook {hook} priority -10 ; policy accept ; }}",
                )  # fmt: skip

    # -- faults ----------------------------------------------------------------------------
    def partition(self, host: TestHost) -> None:
        """Drop every frame to and from `host`: bridged (other hosts) and routed (root ns).

        One nft transaction: all sides are cut at the same instant. (Rule by rule, the replicas
        were cut ~10 ms before the clients, and in that window the master 202'd writes that
        never reached a replica: an asymmetric partition, 4 submissions lost without WAIT.)
        """
        rules = "\n".join(
            [
                f"add rule bridge {self.table} forward iifname {host.root_veth} drop",
                f"add rule bridge {self.table} forward oifname {host.root_veth} drop",
                f"add rule inet {self.table} input ip saddr {host.address} drop",
                f"add rule inet {self.table} output ip daddr {host.address} drop",
            ]
        )
        result = subprocess.run(
            ["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft -f: {result.stderr.strip()}")
        self.partitioned.add(host.netns)

    def heal(self) -> None:
        """Remove every partition rule."""
        run("nft", "flush", "table", "bridge", self.table)
        run("nft", "flush", "table", "inet", self.table)
        self.partitioned.clear()

    # -- cleanup ---------------------------------------------------------------------------
    def close(self) -> None:
        _remove_run(self.pid)
        self.hosts.clear()


def _free_subnet(pid: int) -> ipaddress.IPv4Network:
    routed = run("ip", "-4", "route", "show").stdout
    subnets = list(SUBNET_BASE.subnets(new_prefix=24))
    start = pid % len(subnets)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        if str(subnet) not in routed:
            return subnet  # type: ignore[return-value]
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}")


def _remove_run(pid: int) -> None:
    """Everything run `pid` made; what is already gone is skipped."""
    for family in ("bridge", "inet"):
        run("nft", "delete", "table", family, f"{TABLE_PREFIX}{pid}", check=False)
    netns_list = run("ip", "netns", "list", check=False).stdout
    for line in netns_list.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{NETNS_PREFIX}{pid}-"):
            # Deleting the namespace deletes its veth end, and with it the root end.
            run("ip", "netns", "delete", name, check=False)
    links = run("ip", "-o", "link", "show", check=False).stdout
    for name in re.findall(rf"^\d+: (tc[vb]{pid}(?:x\d+)?)[@:]", links, re.MULTILINE):
        run("ip", "link", "delete", name, check=False)


def remove_stale() -> None:
    """Remove namespaces, links and tables of earlier runs whose process is gone."""
    names = run("ip", "netns", "list", check=False).stdout
    pids = {int(m) for m in re.findall(rf"^{NETNS_PREFIX}(\d+)-\d+", names, re.MULTILINE)}
    tables = run("nft", "list", "tables", check=False).stdout
    pids |= {int(m) for m in re.findall(rf"table \w+ {TABLE_PREFIX}(\d+)$", tables, re.MULTILINE)}
    for pid in pids:
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            _remove_run(pid)
