"""Maximum flow on small graphs (Dinic), with the source side of a minimum cut."""

from __future__ import annotations

from collections import deque


class FlowNetwork:
    """A directed graph with float capacities; nodes are 0..num_nodes-1."""

    def __init__(self, num_nodes: int) -> None:
        self.num_nodes = num_nodes
        self._head: list[list[int]] = [[] for _ in range(num_nodes)]
        self._to: list[int] = []
        self._cap: list[float] = []

    def add_edge(self, u: int, v: int, capacity: float) -> None:
        self._head[u].append(len(self._to))
        self._to.append(v)
        self._cap.append(capacity)
        self._head[v].append(len(self._to))
        self._to.append(u)
        self._cap.append(0.0)

    def _levels(self, source: int, eps: float) -> list[int]:
        level = [-1] * self.num_nodes
        level[source] = 0
        queue = deque([source])
        while queue:
            u = queue.popleft()
            for e in self._head[u]:
                v = self._to[e]
                if level[v] < 0 and self._cap[e] > eps:
                    level[v] = level[u] + 1
                    queue.append(v)
        return level

    def max_flow(self, source: int, sink: int, eps: float = 1e-9) -> float:
        """Push as much flow as possible; residual capacities stay in the network."""
        total = 0.0
        while True:
            level = self._levels(source, eps)
            if level[sink] < 0:
                return total
            cursor = [0] * self.num_nodes
            while True:
                pushed = self._augment(source, sink, float("inf"), level, cursor, eps)
                if pushed <= eps:
                    break
                total += pushed

    def _augment(
        self, u: int, sink: int, limit: float, level: list[int], cursor: list[int], eps: float
    ) -> float:
        if u == sink:
            return limit
        edges = self._head[u]
        while cursor[u] < len(edges):
            e = edges[cursor[u]]
            v = self._to[e]
            if self._cap[e] > eps and level[v] == level[u] + 1:
                pushed = self._augment(v, sink, min(limit, self._cap[e]), level, cursor, eps)
                if pushed > eps:
                    self._cap[e] -= pushed
                    self._cap[e ^ 1] += pushed
                    return pushed
            cursor[u] += 1
        return 0.0

    def source_side(self, source: int, eps: float = 1e-9) -> set[int]:
        """Nodes reachable from `source` in the residual graph (after `max_flow`)."""
        return {v for v, lv in enumerate(self._levels(source, eps)) if lv >= 0}
