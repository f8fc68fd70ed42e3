"""An emulated cluster on one machine: a network namespace per host, real NIC limits.

Layout of testbed `NAME` for a cluster of H hosts (needs root and iproute2):

- namespace `meshcast-NAME-sw` holds bridge `br0`, the switch;
- namespace `meshcast-NAME-h<h>` is host h: loopback, and `eth0`, one end of a veth pair whose
  other end (`p<h>`) is a port of the switch; `eth0` has address 10.213.X.Y/16 (`host_address`);
- `tc` shapes both directions of every host's link: `eth0`'s egress is the host's send rate,
  `p<h>`'s egress (towards the host) its receive rate, each an HTB class at the NIC rate with a
  netem delay of the one-way latency under it.

Rails: the host's rails share its one veth, so its limit is `nics_per_host * nic_gbps` in each
direction (a rank is not pinned to a rail's share). Traffic between ranks of one host never
leaves the namespace (it goes over its loopback), so it is not shaped. Links are full duplex.

Nothing is created outside the testbed's own namespaces. `up` replaces a testbed of the same
name; `down` removes every namespace with the testbed's prefix, also after a crash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

PREFIX = "meshcast-"
STATE_DIR = Path("/run/meshcast-testbed")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


class TestbedError(RuntimeError):
    """The testbed cannot be built or used here; the message says why."""


def check_name(name: str) -> str:
    """`name` when it can name a testbed's namespaces and state file, else `TestbedError`."""
    if not NAME.fullmatch(name):
        raise TestbedError(
            f"testbed name {name!r}: expected 1-32 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class TestbedSpec:
    """What `up` built: enough to launch ranks and to tear it down."""

    name: str
    num_hosts: int
    #: per direction, per host
    host_gbps: float
    latency_us: float
    #: rank -> host index
    host_of: dict[int, int]

    def __post_init__(self) -> None:
        check_name(self.name)

    def namespace(self, host: int) -> str:
        return f"{PREFIX}{self.name}-h{host}"

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.name}-sw"


def host_address(host: int) -> str:
    """eth0's address of host `host` (inside the testbed's namespaces only)."""
    return f"10.213.{host // 250}.{host % 250 + 1}"


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TestbedError(
            f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def check_available() -> None:
    """Raise `TestbedError` saying what is missing (root, ip, tc, namespaces)."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces and tc)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise TestbedError(f"the testbed needs `{tool}` (Debian package iproute2)")
    probe = f"{PREFIX}probe"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    try:
        _run("ip", "netns", "add", probe)
    except TestbedError as err:
        raise TestbedError(f"network namespaces are not available here: {err}") from None
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def namespaces(name: str) -> list[str]:
    """The namespaces of testbed `name` that exist now."""
    mine = re.compile(rf"{PREFIX}{re.escape(check_name(name))}-(sw|h\d+)")
    listing = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line]
    return sorted(namespace for namespace in listing if mine.fullmatch(namespace))


def _shape(namespace: str, device: str, gbps: float, latency_us: float) -> bool:
    """Limit `device`'s egress to `gbps` and delay it by `latency_us`; False when this kernel
    has no netem (the rate limit holds, the delay is left out)."""
    rate = f"{gbps * 1000:.3f}mbit"
    # a burst of about 1 ms at the rate keeps HTB accurate without starving TCP
    burst = str(max(16 * 1024, int(gbps * 1e9 / 8 / 1000)))
    tc = ("tc", "-n", namespace)
    _run(*tc, "qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", "1")
    _run(
        *tc,
        "class",
        "replace",
        "dev",
        device,
        "parent",
        "1:",
        "classid",
        "1:1",
        "htb",
        "rate",
        rate,
        "ceil",
        rate,
        "burst",
        burst,
        "cburst",
        burst,
    )
    if latency_us <= 0:
        return True
    try:
        _run(
            *tc,
            "qdisc",
            "replace",
            "dev",
            device,
            "parent",
            "1:1",
            "handle",
            "10:",
            "netem",
            "delay",
            f"{latency_us:.0f}us",
            "limit",
            "100000",
        )
    except TestbedError as err:
        if "unknown" not in str(err).lower():
            raise
        return False
    return True


def up(spec: TestbedSpec) -> list[str]:
    """Build the testbed (replacing one of the same name); returns notes on what could not be
    emulated here."""
    check_available()
    down(spec.name)
    delayed = True
    try:
        _run("ip", "netns", "add", spec.switch)
        _run("ip", "-n", spec.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", spec.switch, "link", "set", "br0", "up")
        for host in range(spec.num_hosts):
            ns = spec.namespace(host)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run(
                "ip",
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                f"p{host}",
                "netns",
                spec.switch,
            )
            _run("ip", "-n", ns, "addr", "add", f"{host_address(host)}/16", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", spec.switch, "link", "set", f"p{host}", "master", "br0", "up")
            delayed &= _shape(ns, "eth0", spec.host_gbps, spec.latency_us)
            delayed &= _shape(spec.switch, f"p{host}", spec.host_gbps, spec.latency_us)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{spec.name}.json").write_text(json.dumps(asdict(spec)))
    except BaseException:
        down(spec.name)
        raise
    if not delayed:
        return [
            "this kernel has no netem qdisc: links are rate-limited but the "
            f"{spec.latency_us:g} us delay is not added (calibration measures the latency there is)"
        ]
    return []


def down(name: str) -> list[str]:
    """Remove testbed `name`; returns the namespaces removed (none: nothing to do)."""
    removed = []
    for namespace in namespaces(name):
        for pid in _run("ip", "netns", "pids", namespace).split():
            subprocess.run(["kill", "-9", pid], capture_output=True)
        _run("ip", "netns", "del", namespace)
        removed.append(namespace)
    (STATE_DIR / f"{name}.json").unlink(missing_ok=True)
    return removed


@contextmanager
def running(spec: TestbedSpec) -> Iterator[list[str]]:
    """`up` for the duration of a `with` block (yields its notes); `down` afterwards, also on
    an exception, Ctrl-C or SIGTERM."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield up(spec)
    finally:
        down(spec.name)
        signal.signal(signal.SIGTERM, previous)


def load(name: str) -> TestbedSpec | None:
    """The spec of a testbed that is up, or None."""
    path = STATE_DIR / f"{check_name(name)}.json"
    if not path.exists() or not namespaces(name):
        return None
    data = json.loads(path.read_text())
    data["host_of"] = {int(k): v for k, v in data["host_of"].items()}
    return TestbedSpec(**data)


def status(name: str) -> str:
    """Namespaces, addresses and per-link traffic of testbed `name`."""
    spec = load(name)
    if spec is None:
        return f"testbed {name!r} is down"
    lines = [
        f"testbed {name!r}: {spec.num_hosts} hosts, {spec.host_gbps:g} Gbit/s per direction "
        f"per host, {spec.latency_us:g} us one way"
    ]
    for host in range(spec.num_hosts):
        ranks = sorted(r for r, h in spec.host_of.items() if h == host)
        stats = _run("tc", "-s", "-n", spec.namespace(host), "class", "show", "dev", "eth0")
        sent = next((line.split()[1] for line in stats.splitlines() if "Sent" in line), "0")
        lines.append(
            f"  {spec.namespace(host)}  {host_address(host)}  ranks {ranks}  sent {sent} bytes"
        )
    return "\n".join(lines)
