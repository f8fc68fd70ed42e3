"""The cluster as port-v1 sees it: hosts, rails, devices and their unary ports (DESIGN §3).

Ports are dense integers so that schedulers can keep their ready times in one array:
`send(h, r)` and `recv(h, r)` per host and rail (one `nic(h, r)` port when half duplex), and
`link_out(d)` / `link_in(d)` per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcast.planner.request import ClusterSpec


@dataclass(frozen=True)
class Topology:
    """Host and rail of every device, link speeds, and the port numbering."""

    num_hosts: int
    num_rails: int
    nic_bytes_per_s: float
    intra_bytes_per_s: float
    latency_s: float
    half_duplex: bool
    host_of: dict[int, int]
    rail_of: dict[int, int]
    devices_of_host: tuple[tuple[int, ...], ...]
    _device_index: dict[int, int] = field(repr=False)
    #: (src, dst) -> what `planner.cost.transfer_cost` needs of its route, filled on demand
    route_shapes: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, ...], int, int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_cluster(cls, cluster: ClusterSpec) -> Topology:
        host_of: dict[int, int] = {}
        rail_of: dict[int, int] = {}
        index: dict[int, int] = {}
        for h, devices in enumerate(cluster.hosts):
            for j, d in enumerate(devices):
                host_of[d] = h
                rail_of[d] = j % cluster.nics_per_host
                index[d] = len(index)
        return cls(
            num_hosts=len(cluster.hosts),
            num_rails=cluster.nics_per_host,
            nic_bytes_per_s=cluster.nic_gbps * 1e9 / 8,
            intra_bytes_per_s=cluster.intra_gbps * 1e9 / 8,
            latency_s=cluster.latency_us * 1e-6,
            half_duplex=cluster.duplex == "half",
            host_of=host_of,
            rail_of=rail_of,
            devices_of_host=cluster.hosts,
            _device_index=index,
        )

    @property
    def num_nic_ports(self) -> int:
        return self.num_hosts * self.num_rails

    @property
    def num_ports(self) -> int:
        return 2 * self.num_nic_ports + 2 * len(self._device_index)

    @property
    def device_index(self) -> dict[int, int]:
        """Device id -> its position in the port numbering (hosts in order)."""
        return self._device_index

    def send_port(self, host: int, rail: int) -> int:
        return host * self.num_rails + rail

    def recv_port(self, host: int, rail: int) -> int:
        if self.half_duplex:
            return self.send_port(host, rail)
        return self.num_nic_ports + host * self.num_rails + rail

    def link_out_port(self, device: int) -> int:
        return 2 * self.num_nic_ports + 2 * self._device_index[device]

    def link_in_port(self, device: int) -> int:
        return 2 * self.num_nic_ports + 2 * self._device_index[device] + 1

    def port_name(self, port: int) -> str:
        """Human-readable port name, for charts and traces."""
        nic = self.num_nic_ports
        if port < 2 * nic:
            kind = "send" if port < nic else "recv"
            if self.half_duplex:
                kind = "nic"
            host, rail = divmod(port % nic, self.num_rails)
            return f"{kind}(h{host},r{rail})"
        device = list(self._device_index)[(port - 2 * nic) // 2]
        return f"{'link_in' if (port - 2 * nic) % 2 else 'link_out'}(d{device})"
