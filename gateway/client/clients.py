"""`Client` and `AsyncClient`: the same API over one pooled httpx client each; the logic they
share is in calls.py, tensors.py and retries.py, so each method here is only its I/O."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from gateway.client.calls import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Settings,
    Target,
    answer_error,
    attempt_timeout,
    httpx_timeout,
    json_object,
    late,
    request_headers,
    transport_error,
)
from gateway.client.errors import GatewayTimeout
from gateway.client.listing import Application, ModelVersion
from gateway.client.retries import Attempts
from gateway.client.tensors import DEFAULT_BINARY_THRESHOLD, Contract, input_bytes, read_answer, request_body
from gateway.errors import ContractViolation, GatewayError

Outputs = dict[str, Any]
OFF_LOOP_BYTES = 256 * 1024  # the async client encodes and decodes bodies this large in a thread


class _Base:
    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S, deadline: float | None = None,
                 retries: int = DEFAULT_RETRIES, binary_threshold: int | None = DEFAULT_BINARY_THRESHOLD) -> None:
        self.settings = Settings.of(url, api_key, timeout, deadline, retries, binary_threshold)
        self._contracts: dict[Target, Contract] = {}

    @property
    def url(self) -> str:
        return self.settings.url

    def _attempts(self) -> Attempts:
        return Attempts.start(self.settings.retries, self.settings.deadline, self.settings.timeout)

    def _remember(self, target: Target, contract: Contract) -> Contract:
        """Keep a known contract; one not known yet (a backend not discovered) is read again next call."""
        if contract.known:
            self._contracts[target] = contract
        else:
            self._contracts.pop(target, None)
        return contract


class Client(_Base):
    """A blocking client of one gateway.

        with Client("http://127.0.0.1:8000") as gateway:
            gateway.predict("increment_app", number=[1])   # {"number": array([2], dtype=int32)}

    `predict` takes each input as a keyword (numpy arrays or scalars, lists, Python scalars) and
    answers a dict of numpy arrays of the contract's dtypes (`as_lists=True`: plain JSON values).
    Errors raise the gateway's exceptions (gateway.client.errors). Threads may share one client:
    their calls share its connection pool.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S, deadline: float | None = None,
                 retries: int = DEFAULT_RETRIES, binary_threshold: int | None = DEFAULT_BINARY_THRESHOLD,
                 verify: bool | str = True) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout, deadline=deadline, retries=retries,
                         binary_threshold=binary_threshold)
        self._http = httpx.Client(base_url=self.settings.url, verify=verify, timeout=httpx_timeout(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def predict(self, app: str, inputs: Mapping[str, Any] | None = None, /, *, as_lists: bool = False,
                **named: Any) -> Outputs:
        """The outputs of application `app` for the inputs, given as keywords or as one mapping
        (for an input named like an option of this method)."""
        return self._predict(Target("applications", app), {**(inputs or {}), **named}, as_lists)

    def predict_model(self, name: str, inputs: Mapping[str, Any] | None = None, /, *, version: int | None = None,
                      label: str | None = None, as_lists: bool = False, **named: Any) -> Outputs:
        """The outputs of model `name` (at `version` or `label`; else its default) for the inputs."""
        return self._predict(Target("models", name, version, label), {**(inputs or {}), **named}, as_lists)

    def applications(self) -> list[Application]:
        """The applications the API key may call, with their plans."""
        body = json_object(self._send("GET", "/gateway/applications", self._attempts()))
        return [Application.from_json(item) for item in body["applications"]]

    def models(self) -> list[ModelVersion]:
        """Every model version the API key may call, with its state and contract."""
        body = json_object(self._send("GET", "/gateway/models", self._attempts()))
        return [ModelVersion.from_json(item) for item in body["models"]]

    def ready(self) -> bool:
        """Whether the gateway is ready (`GET /health/ready` answers 200)."""
        try:
            self._send("GET", "/health/ready", Attempts.start(0, self.settings.deadline, self.settings.timeout))
        except GatewayError as error:
            if error.status == 503:
                return False
            raise
        return True

    def _predict(self, target: Target, inputs: Mapping[str, Any], as_lists: bool) -> Outputs:
        attempts = self._attempts()
        contract = self._contract(target, attempts)
        attempts.pipeline = contract.stages > 1
        try:
            return self._post(target, inputs, contract, as_lists, attempts)
        except ContractViolation:
            fresh = self._contract(target, attempts, refresh=True)  # a reload may have changed it
            if fresh == contract:
                raise
            attempts.pipeline = fresh.stages > 1
        return self._post(target, inputs, fresh, as_lists, attempts)

    def _contract(self, target: Target, attempts: Attempts, refresh: bool = False) -> Contract:
        cached = None if refresh else self._contracts.get(target)
        if cached is not None:
            return cached
        return self._remember(target, target.contract(json_object(self._send("GET", target.listing, attempts))))

    def _post(self, target: Target, inputs: Mapping[str, Any], contract: Contract, as_lists: bool,
              attempts: Attempts) -> Outputs:
        body = request_body(inputs, contract, self.settings.binary_threshold)
        response = self._send("POST", target.path, attempts, body.content, body.headers)
        if not contract.known and not as_lists:  # answered, so the gateway knows the contract now: type by it
            contract = self._contract(target, attempts)
        return read_answer(response.headers.get("content-type", ""), response.headers, response.content,
                           contract, as_lists)

    def _send(self, method: str, path: str, attempts: Attempts, content: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> httpx.Response:
        while True:
            if self._http.is_closed:
                raise RuntimeError("the client is closed")
            timeout = attempt_timeout(self.settings, attempts)
            try:
                response = self._exchange(method, path, content, request_headers(self.settings, attempts, headers),
                                          timeout)
            except httpx.TransportError as failure:
                error = transport_error(failure, timeout)
            except GatewayTimeout as failure:
                error = failure
            else:
                if response.status_code < 400:
                    return response
                error = answer_error(response)
            wait = attempts.wait_s(error)
            if wait is None:
                raise error
            time.sleep(wait)

    def _exchange(self, method: str, path: str, content: bytes | None, headers: Mapping[str, str],
                  timeout: float | None) -> httpx.Response:
        """One request and its whole answer within `timeout`: httpx bounds each read, so the body is
        streamed and the time checked between its chunks (a server trickling bytes is cut off)."""
        ends_at = None if timeout is None else time.monotonic() + timeout
        request = self._http.build_request(method, path, content=content, headers=headers,
                                           timeout=httpx_timeout(timeout))
        response = self._http.send(request, stream=True)
        try:
            raw = bytearray()
            for chunk in response.iter_raw():
                raw += chunk
                if ends_at is not None and time.monotonic() > ends_at:
                    raise late(timeout or 0.0)
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(raw), request=request)


class AsyncClient(_Base):
    """`Client` for asyncio: the same methods, awaited.

        async with AsyncClient() as gateway:
            await gateway.predict("increment_app", number=[1])
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S, deadline: float | None = None,
                 retries: int = DEFAULT_RETRIES, binary_threshold: int | None = DEFAULT_BINARY_THRESHOLD,
                 verify: bool | str = True) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout, deadline=deadline, retries=retries,
                         binary_threshold=binary_threshold)
        self._reading: dict[Target, asyncio.Lock] = {}
        self._http = httpx.AsyncClient(base_url=self.settings.url, verify=verify, timeout=httpx_timeout(timeout))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def predict(self, app: str, inputs: Mapping[str, Any] | None = None, /, *, as_lists: bool = False,
                      **named: Any) -> Outputs:
        """The outputs of application `app` for the inputs, given as keywords or as one mapping
        (for an input named like an option of this method)."""
        return await self._predict(Target("applications", app), {**(inputs or {}), **named}, as_lists)

    async def predict_model(self, name: str, inputs: Mapping[str, Any] | None = None, /, *, version: int | None = None,
                            label: str | None = None, as_lists: bool = False, **named: Any) -> Outputs:
        """The outputs of model `name` (at `version` or `label`; else its default) for the inputs."""
        return await self._predict(Target("models", name, version, label), {**(inputs or {}), **named}, as_lists)

    async def applications(self) -> list[Application]:
        """The applications the API key may call, with their plans."""
        body = json_object(await self._send("GET", "/gateway/applications", self._attempts()))
        return [Application.from_json(item) for item in body["applications"]]

    async def models(self) -> list[ModelVersion]:
        """Every model version the API key may call, with its state and contract."""
        body = json_object(await self._send("GET", "/gateway/models", self._attempts()))
        return [ModelVersion.from_json(item) for item in body["models"]]

    async def ready(self) -> bool:
        """Whether the gateway is ready (`GET /health/ready` answers 200)."""
        try:
            await self._send("GET", "/health/ready", Attempts.start(0, self.settings.deadline, self.settings.timeout))
        except GatewayError as error:
            if error.status == 503:
                return False
            raise
        return True

    async def _predict(self, target: Target, inputs: Mapping[str, Any], as_lists: bool) -> Outputs:
        attempts = self._attempts()
        contract = await self._contract(target, attempts)
        attempts.pipeline = contract.stages > 1
        try:
            return await self._post(target, inputs, contract, as_lists, attempts)
        except ContractViolation:
            fresh = await self._contract(target, attempts, refresh=True)  # a reload may have changed it
            if fresh == contract:
                raise
            attempts.pipeline = fresh.stages > 1
        return await self._post(target, inputs, fresh, as_lists, attempts)

    async def _contract(self, target: Target, attempts: Attempts, refresh: bool = False) -> Contract:
        seen = self._contracts.get(target)
        async with self._reading.setdefault(target, asyncio.Lock()):  # concurrent first calls: one read
            cached = self._contracts.get(target)
            if cached is not None and not (refresh and cached is seen):  # (refreshed while this call waited)
                return cached
            listing = json_object(await self._send("GET", target.listing, attempts))
            return self._remember(target, target.contract(listing))

    async def _post(self, target: Target, inputs: Mapping[str, Any], contract: Contract, as_lists: bool,
                    attempts: Attempts) -> Outputs:
        threshold = self.settings.binary_threshold
        if input_bytes(inputs) >= OFF_LOOP_BYTES:  # large: encoded off the event loop, which keeps serving
            body = await asyncio.to_thread(request_body, inputs, contract, threshold)
        else:
            body = request_body(inputs, contract, threshold)
        response = await self._send("POST", target.path, attempts, body.content, body.headers)
        if not contract.known and not as_lists:  # answered, so the gateway knows the contract now: type by it
            contract = await self._contract(target, attempts)
        read = (response.headers.get("content-type", ""), response.headers, response.content, contract, as_lists)
        if len(response.content) >= OFF_LOOP_BYTES:
            return await asyncio.to_thread(read_answer, *read)
        return read_answer(*read)

    async def _send(self, method: str, path: str, attempts: Attempts, content: bytes | None = None,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        while True:
            if self._http.is_closed:
                raise RuntimeError("the client is closed")
            timeout = attempt_timeout(self.settings, attempts)
            try:
                async with asyncio.timeout(timeout):  # the whole exchange: httpx's timeouts bound each read
                    response = await self._http.request(method, path, content=content, timeout=httpx_timeout(timeout),
                                                        headers=request_headers(self.settings, attempts, headers))
            except httpx.TransportError as failure:
                error = transport_error(failure, timeout)
            except TimeoutError:
                error = late(timeout or 0.0)
            else:
                if response.status_code < 400:
                    return response
                error = answer_error(response)
            wait = attempts.wait_s(error)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
