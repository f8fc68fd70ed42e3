"""A small client for the planning service, with timeouts, retries and a local fallback."""

from __future__ import annotations

import time
from typing import Any

import httpx

from meshcast.planner.plan import Plan
from meshcast.planner.request import Request
from meshcast.solver import plan_request

#: statuses worth retrying: the service is overloaded, restarting or behind a proxy that is
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ServiceError(RuntimeError):
    """The service refused a call; `field` names what was wrong."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{status} {field}: {message}")
        self.status, self.field, self.message = status, field, message


class ServiceUnavailable(RuntimeError):
    """The service could not be reached, or stayed unavailable through every retry."""


class MeshcastClient:
    """`MeshcastClient("http://127.0.0.1:8000").plan(request_dict)` -> `Plan`.

    Connection failures and 429/502/503/504 answers are retried `retries` times with
    exponential back-off (0.2 s, 0.4 s, ...); client errors (4xx) are not.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 120.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL, got {base_url!r}")
        self.retries = retries
        self._http = httpx.Client(base_url=url, timeout=timeout_s, transport=transport)

    def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as err:
                if last:
                    raise ServiceUnavailable(f"{self._http.base_url}: {err}") from err
            else:
                if response.status_code not in _RETRY_STATUSES:
                    return response
                if last:
                    raise ServiceUnavailable(
                        f"{self._http.base_url}: {response.status_code} after "
                        f"{self.retries + 1} attempts"
                    )
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._send(method, path, body)
        if response.status_code != 200:
            detail = (
                response.json().get("detail", {})
                if response.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            if not isinstance(detail, dict):
                detail = {"message": str(detail)}
            raise ServiceError(
                response.status_code,
                str(detail.get("field", "")),
                str(detail.get("message", response.text)),
            )
        data: dict[str, Any] = response.json()
        return data

    def plan(self, request: dict[str, Any]) -> Plan:
        return Plan.from_json(self._call("POST", "/v1/plans", request))

    def plan_request(self, request: Request) -> Plan:
        """A plan from the service, or planned in this process when the service is down."""
        try:
            return self.plan(request.to_json())
        except ServiceUnavailable:
            return plan_request(request)

    def cached(self, request_id: str) -> Plan:
        return Plan.from_json(self._call("GET", f"/v1/plans/{request_id}"))

    def compare(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("POST", "/v1/compare", request)["algorithms"]
        return rows

    def check(self, request: dict[str, Any], plan: Plan) -> dict[str, Any]:
        return self._call("POST", "/v1/check", {"request": request, "plan": plan.to_json()})

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeshcastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
