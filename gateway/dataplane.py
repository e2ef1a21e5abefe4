"""The transport-agnostic core: run an application's stages on arrays.

HTTP routes and any other front door decode their wire format into arrays, call
`DataPlane.predict` and encode the arrays it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.answer_headers import Timing
from gateway.backends import BackendCall, NDArray, NotDescribed, Prediction, Selector, UnavailableBackend
from gateway.backends.capabilities import (
    Kind,
    ReloadAnswer,
    ReloadsConfig,
    ServerConfig,
    absent,
    innermost,
    offered,
    reload_applied,
)
from gateway.errors import (
    ApplicationContractMismatch,
    BackendError,
    BackendUnavailable,
    BadRequest,
    DeadlineExceeded,
    GatewayError,
    NotFound,
    OutputContractViolation,
    Overloaded,
    TooManyRequests,
)
from gateway.lookups import ByIdentity, SharedLookups
from gateway.manifests import Resolution, resolved_name
from gateway.observability import Metrics
from gateway.output_contract import check_outputs
from gateway.registry import Application, Model, Registry, Stage, Target, Variant, target_contract
from gateway.requestlog import LoggedCall
from gateway.requestlog.logs import RequestLogs
from gateway.routing import choose_variant
from gateway.shadows import ShadowTraffic
from tensorcodecs import Signature, TensorSpec

C = TypeVar("C")
log = logging.getLogger("gateway.dataplane")
DISCOVERY_TIMEOUT_S = 5.0  # the longest a start or reload waits for backends to describe their contracts


@dataclass(slots=True)
class RequestContext:
    """What the core needs to know about the caller's request, and what it learns serving it.

    `labels` collects what logs and metrics are labelled with (application, model, version);
    `route_key` and `variant_override` are the caller's routing wishes (sticky key, a forced
    `model:version`); `served` names the variants that served it, stage by stage; `timings`
    is where its time went (Server-Timing); `after_answer` holds what runs once the caller's
    answer was sent (the front door calls `answered()`), such as shadow copies."""

    request_id: str
    deadline: float  # time.monotonic() by which the answer is due
    labels: dict[str, str] = field(default_factory=dict)
    route_key: str | None = None
    variant_override: tuple[str, ...] = ()  # variant names, checked (routing.variant_override)
    served: list[str] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    after_answer: list[Callable[[], object]] = field(default_factory=list)
    choices: tuple[tuple[Stage, Variant], ...] = ()  # each stage's variant, chosen before the body is decoded
    # Request logs: None while none is configured (the calls are not looked at); True once its
    # application's log sampled the request (every stage's call is recorded), else False.
    logged: bool | None = None

    @classmethod
    def start(cls, request_id: str, timeout_s: float,
              labels: dict[str, str] | None = None) -> RequestContext:
        return cls(request_id, time.monotonic() + timeout_s, {} if labels is None else labels)

    def remaining(self) -> float:
        """Seconds left before the deadline; DeadlineExceeded once it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed before the answer was ready")
        return left

    def answered(self) -> int:
        """The caller's answer was sent (or the caller is gone): run what waited for it; the
        jobs that raised (logged; the others still run)."""
        jobs, self.after_answer = self.after_answer, []
        failed = 0
        for job in jobs:
            try:
                job()
            except Exception:
                failed += 1
                log.exception("request %s: a job run after the answer failed", self.request_id)
        return failed


SHARED_LOOKUP_MIN_S = 10.0  # the least time a contract lookup shared by requests is given


class DataPlane:
    """Runs requests against the current registry, within the concurrency limits: the
    gateway's (`max_concurrency`, beyond it 503) and each application's (beyond it 429).
    Nothing waits in a queue: a request over a limit is refused at once with Retry-After."""

    def __init__(self, registry: Registry, max_concurrency: int = 1024,
                 metrics: Metrics | None = None, shadows: ShadowTraffic | None = None,
                 request_logs: RequestLogs | None = None) -> None:
        self.registry = registry
        self.max_concurrency = max_concurrency
        self.metrics = metrics
        self.in_flight = 0
        self._app_in_flight: dict[str, int] = {}
        self.contract_lookups: SharedLookups[tuple[ByIdentity[Model], Selector | None], dict[str, Signature]] = (
            SharedLookups())
        self.shadows = shadows  # where shadow variants get their copies (None: they get none)
        self.request_logs = request_logs  # where sampled calls are recorded (None: nowhere)

    def application(self, name: str) -> Application:
        """The application called `name` (NotFound otherwise)."""
        return self.registry.application(name)

    async def with_contract(self, app: Application, context: RequestContext) -> Application:
        """`app` once the variant chosen for each stage (routed now, kept for the run) has its
        contract known: a version or label whose contract comes from its backend and could not
        be discovered yet (its server was down at start, the version was not loaded yet) is
        asked now, so that the body is checked against the real contract and each stage is sent
        its model's inputs, or the request fails with a 503 naming the variant before any stage
        runs; the variants not chosen are not asked (a canary its backend does not serve yet
        fails only the requests routed to it). An application whose known contracts do not fit
        together is refused (503 ApplicationContractMismatch) rather than run."""
        context.choices = tuple((stage, choose_variant(stage, context)) for stage in app.stages)
        asked = await asyncio.gather(*(self._ask_contract(app, stage, variant, context)
                                       for stage, variant in context.choices))
        if any(asked):
            app = self._refreshed(app)
        _refuse_mismatched(app)
        return app

    async def _ask_contract(self, app: Application, stage: Stage, variant: Variant,
                            context: RequestContext) -> bool:
        """Whether `variant`'s contract had to be asked of its backend (it comes from there and
        was not known yet); a lookup that fails is a 503 (the application exists, its variant is
        not served yet), naming the stage and variant when the application has several."""
        target = variant.target
        model = target.model
        if model.manifest.contract_declared or target.selector in model.contracts.by_selector:
            return False
        try:
            await self._signatures(target, context.remaining(), context.request_id)
        except GatewayError as error:
            failure = error if not isinstance(error, NotFound) else BackendUnavailable(
                error.message, log_detail=error.log_detail)
            if len(app.stages) > 1 or len(stage.live) > 1:
                failure = failure.with_prefix(f"stage {stage.number} ({variant.name}): ")
            raise failure from error
        return True

    def _refreshed(self, app: Application) -> Application:
        """`app` with the contracts discovered since it was looked up (not one a reload built meanwhile)."""
        fresh = self.registry.applications.get(app.name)
        return fresh if fresh is not None and fresh.stages is app.stages else app

    async def predict(self, app: Application, inputs: Mapping[str, NDArray],
                      context: RequestContext) -> dict[str, NDArray]:
        """Pass `inputs` through every stage; each stage's outputs feed the next."""
        _refuse_mismatched(app)
        if self.in_flight >= self.max_concurrency:
            raise Overloaded(f"the gateway is at its limit of {self.max_concurrency} requests in flight")
        limit = app.manifest.max_concurrency
        running = self._app_in_flight.get(app.name, 0)
        if limit is not None and running >= limit:
            raise TooManyRequests(f"application {app.name} is at its limit of {limit} requests in flight")
        self.in_flight += 1
        self._app_in_flight[app.name] = running + 1
        logs = self.request_logs
        if logs is not None and logs.active:
            context.logged = logs.sampled(app.manifest.request_log)
        try:
            return await self._run_stages(app, inputs, context)
        finally:
            self.in_flight -= 1
            self._app_in_flight[app.name] -= 1

    async def _run_stages(self, app: Application, inputs: Mapping[str, NDArray],
                          context: RequestContext) -> dict[str, NDArray]:
        tensors: Mapping[str, NDArray] = inputs
        outputs: dict[str, NDArray] = {}
        chosen = {id(stage): variant for stage, variant in context.choices}  # by with_contract
        context.choices = ()
        for stage in app.stages:
            variant = chosen.get(id(stage)) or choose_variant(stage, context)
            context.served.append(variant.name)
            if await self._ask_contract(app, stage, variant, context):  # not asked by with_contract
                app = self._refreshed(app)
                _refuse_mismatched(app)
            tensors = _stage_inputs(stage, variant.target, tensors)
            prediction, call_seconds = await self._run_stage(app, stage, variant, tensors, context)
            if stage.shadows and self.shadows is not None:
                self.shadows.copy(app, stage, variant, tensors, prediction, call_seconds, context, _discovered_inputs)
            outputs = prediction.outputs
            tensors = outputs
        return _contract_outputs(app, outputs, context.served[-1])

    async def _run_stage(self, app: Application, stage: Stage, variant: Variant, tensors: Mapping[str, NDArray],
                         context: RequestContext) -> tuple[Prediction, float]:
        """One stage's call to `variant`, timed (Server-Timing `stageN`,
        gateway_stage_duration_seconds), its answer checked when the application validates
        outputs; an error of a stage of a pipeline names the stage and variant. With the
        backend call's own seconds (what a shadow's call is compared with)."""
        target, name = variant.target, variant.name
        started = time.perf_counter()
        answered = False
        try:
            prediction = await self._predict(target, tensors, context, specs=_discovered_inputs(target))
            answered = True
            call_seconds = time.perf_counter() - started
            if context.logged is not None:
                self._log_call(target, tensors, prediction, None, started, None, context, app, stage, name)
            if app.manifest.validate_outputs:
                self._check_outputs(prediction.outputs, target, name, context)
        except GatewayError as error:
            if context.logged is not None and not answered:  # an answer that broke its contract was recorded
                self._log_call(target, tensors, None, error, started, None, context, app, stage, name)
            if len(app.stages) == 1:
                raise
            raise error.with_prefix(f"stage {stage.number} ({name}): ") from error
        finally:
            elapsed = time.perf_counter() - started
            context.timings.append(Timing(f"stage{stage.number}", elapsed, name))
            if self.metrics is not None:
                labels = context.labels
                self.metrics.stage_seconds_child(app.name, stage.number, labels.get("model", ""),
                                                 labels.get("version", "")).observe(elapsed)
        return prediction, call_seconds

    def _check_outputs(self, outputs: Mapping[str, NDArray], target: Target, variant: str,
                       context: RequestContext) -> None:
        """`outputs` against the contract of the model `target` reaches (validate_outputs; none
        known yet: nothing to check), counted per model version when they break it."""
        contract = target_contract(target)
        if contract is None:
            return
        try:
            check_outputs(outputs, contract.outputs, variant)
        except OutputContractViolation:
            if self.metrics is not None:
                labels = context.labels
                self.metrics.output_contract_violations.labels(labels["model"], labels["version"]).inc()
            raise

    # ------------------------------------------------------------ single models

    def resolve(self, name: str, selector: Selector | None = None) -> Target:
        """The model `name` at the `selector`'s version or label (NotFound otherwise)."""
        return self.registry.resolve(name, selector)

    async def predict_model(self, target: Target, inputs: Mapping[str, NDArray], context: RequestContext,
                            signature_name: str | None = None,
                            specs: Mapping[str, TensorSpec] | None = None) -> Prediction:
        """One model's outputs for `inputs`, with the model spec its backend answered with
        (within the gateway's concurrency limit)."""
        if self.in_flight >= self.max_concurrency:
            raise Overloaded(f"the gateway is at its limit of {self.max_concurrency} requests in flight")
        self.in_flight += 1
        started = time.perf_counter()
        logs = self.request_logs
        try:
            prediction = await self._predict(target, inputs, context, signature_name, specs)
        except GatewayError as error:
            if logs is not None and logs.active:
                self._log_call(target, inputs, None, error, started, signature_name, context)
            raise
        else:
            if logs is not None and logs.active:
                self._log_call(target, inputs, prediction, None, started, signature_name, context)
            return prediction
        finally:
            self.in_flight -= 1
            labels = context.labels
            context.timings.append(Timing("backend", time.perf_counter() - started,
                                          f"{labels['model']}:{labels['version']}" if labels.get("version")
                                          else resolved_name(Resolution(target.model.manifest, target.selector))))

    def _log_call(self, target: Target, inputs: Mapping[str, NDArray], prediction: Prediction | None,
                  error: GatewayError | None, started: float, signature_name: str | None, context: RequestContext,
                  app: Application | None = None, stage: Stage | None = None, variant: str | None = None) -> None:
        """Record one model call, answered (`prediction`) or failed (`error`), in the logs that
        sample it: its application's (`context.logged`) and its model's. Never raises: a fault
        here is logged and counted, never the caller's error."""
        logs = self.request_logs
        if logs is None:
            return
        try:
            manifest = target.model.manifest
            sinks = logs.sinks(app.manifest.request_log if app is not None and context.logged else None,
                               manifest.request_log)
            if not sinks:
                return
            duration = time.perf_counter() - started
            spec = prediction.spec if prediction is not None else None
            version = (spec.version if spec is not None and spec.version is not None
                       else _asked_version_number(target))
            call = LoggedCall(
                context.request_id, time.time() - duration, duration, manifest.name, version,
                spec.signature_name if spec is not None else signature_name or target.model.signature_name,
                inputs, prediction.outputs if prediction is not None else None,
                200 if error is None else error.status,
                None if error is None else f"{error.code}: {error.message}",
                app.name if app is not None else None, stage.number if stage is not None else None, variant)
            logs.record(call, sinks)
        except Exception:
            log.exception("request %s: the call to model %s could not be logged", context.request_id,
                          target.model.label)
            if self.metrics is not None:
                self.metrics.request_log_records.labels("", "failed").inc()  # before any sink

    async def _predict(self, target: Target, inputs: Mapping[str, NDArray], context: RequestContext,
                       signature_name: str | None = None,
                       specs: Mapping[str, TensorSpec] | None = None) -> Prediction:
        model = target.model
        name = model.manifest.name
        version = _asked_version(target)
        context.labels["model"], context.labels["version"] = name, version
        started = time.perf_counter()
        try:
            prediction = await self._call_backend(target, inputs, context, signature_name, specs)
        except GatewayError as error:
            if self.metrics is not None:
                self.metrics.backend_errors.labels(name, version, error.grpc_code.name).inc()
            raise
        finally:
            if self.metrics is not None:
                self.metrics.backend_seconds_child(name, version).observe(time.perf_counter() - started)
        if prediction.spec is not None and prediction.spec.version is not None:
            context.labels["version"] = str(prediction.spec.version)
        return prediction

    async def _call_backend(self, target: Target, inputs: Mapping[str, NDArray], context: RequestContext,
                            signature_name: str | None, specs: Mapping[str, TensorSpec] | None) -> Prediction:
        call = BackendCall(inputs, context.remaining(), context.request_id, target.selector, signature_name, specs)
        prediction = await target.model.backend.predict(call)
        if prediction.spec is not None:
            log.debug("request %s: model %s answered as %s", context.request_id, target.model.label,
                      prediction.spec.header())
        return prediction

    async def signature(self, target: Target, signature_name: str | None,
                        context: RequestContext) -> Signature:
        """The contract requests to `target` are checked against: the manifest's, else the
        one the backend describes (asked once per version or label, then kept)."""
        model = target.model
        name = signature_name or model.signature_name
        manifest = model.manifest
        if manifest.contract_declared and (signature_name is None or name == model.signature_name
                                           or name == manifest.signature.name):
            return manifest.signature
        signatures = await self._signatures(target, context.remaining(), context.request_id)
        signature = signatures.get(name)
        if signature is None:
            raise BadRequest(f'Serving signature name: "{name}" not found in signature def')
        return signature

    async def _signatures(self, target: Target, timeout: float, request_id: str = "") -> dict[str, Signature]:
        model = target.model
        known = model.contracts.by_selector.get(target.selector)
        if known is not None:
            return known
        backend = model.backend
        if not backend.describes:  # nothing to ask: the backend says at once why not
            try:
                return await backend.describe(target.selector, timeout, request_id)
            except NotDescribed:
                raise NotFound(f"model {model.label} does not describe its signatures") from None
        # By the Model object (a reload builds new ones, and forgets every failure). The shared
        # call has a deadline of its own: a caller with a short one must neither cut it short
        # nor start a back-off for every other caller; it stops waiting at its own deadline.
        lookup_timeout = max(timeout, SHARED_LOOKUP_MIN_S)
        shared = self.contract_lookups.get((ByIdentity(model), target.selector),
                                           lambda: self._describe(target, lookup_timeout, request_id))
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await shared
        except TimeoutError:
            if not deadline.expired():  # the lookup's own, not this caller's deadline
                raise
            raise DeadlineExceeded(f"the contract of model {model.label} was not known before the "
                                   "request's deadline") from None

    async def _describe(self, target: Target, timeout: float, request_id: str) -> dict[str, Signature]:
        """Ask the backend for `target`'s signatures and keep them."""
        model = target.model
        try:
            signatures = await model.backend.describe(target.selector, timeout, request_id)
        except GatewayError as error:
            model.contracts.failures[target.selector] = error.message
            raise
        model.contracts.by_selector[target.selector] = signatures
        model.contracts.failures.pop(target.selector, None)
        self.registry.refresh_applications()  # a variant's version may be the one described
        return signatures

    async def discover(self, timeout: float, request_id: str = "") -> dict[str, str]:
        """Ask every model without a declared contract whose backend describes for its
        signatures (for request `request_id`; "": at start or reload); the models that could
        not answer, with the reason (they are asked again by requests, one call at a time per
        model and not before the back-off of `contract_lookups` ends)."""
        models = [m for m in self.registry.models.values()
                  if not m.manifest.contract_declared and m.backend.describes]
        for model in models:
            model.contracts.clear()
        self.contract_lookups.forget()
        targets = [Target(m) for m in models] + _variant_targets(self.registry)
        results = await asyncio.gather(*(self._signatures(t, timeout, request_id) for t in targets),
                                       return_exceptions=True)
        failures: dict[str, str] = {}
        for target, result in zip(targets, results, strict=True):
            model = target.model
            if isinstance(result, GatewayError):
                failures.setdefault(model.label, result.message)
                log.warning("contract of model %s (%s) not discovered yet: %s [%s]", model.label,
                            target.selector or "the default version", result.message, result.log_detail or "")
            elif isinstance(result, BaseException):
                raise result
        self.registry.refresh_applications()
        return failures

    def capability(self, model: Model, kind: Kind[C]) -> C:
        """The backend of `model` as one offering `kind` (a protocol of
        gateway.backends.capabilities: classify, model status, ...), else NotFound in the
        kind's words; a model whose backend could not start answers its 503 (as it answers
        predictions): the one place a front door asks what a backend offers."""
        backend = offered(model.backend, kind)
        if backend is None:
            down = innermost(model.backend)
            if isinstance(down, UnavailableBackend):
                raise down.error()
            raise NotFound(f"model {model.label} {absent(kind)}")
        return backend

    async def reload_config(self, model: Model, config: ServerConfig, context: RequestContext) -> ReloadAnswer:
        """Hand the server behind `model` a new config (ReloadsConfig); once it took it, its
        models may have changed: the contracts of every model it serves are forgotten and
        discovered again (for this request)."""
        answer = await self.capability(model, ReloadsConfig).reload_config(config, context.remaining(),
                                                                            context.request_id)
        if reload_applied(answer):
            target = model.backend.target
            for other in self.registry.models.values():
                if other.backend.target == target:
                    other.contracts.clear()
            await self.discover(context.remaining(), context.request_id)
        return answer


def _variant_targets(registry: Registry) -> list[Target]:
    """The version or label each application variant of a model without a declared contract
    asks for, when it names one (a canary of `toy:1` and `toy:2`): their contracts are the
    ones the application's checks and requests use."""
    targets: dict[tuple[int, Selector], Target] = {}
    for app in registry.applications.values():
        for stage in app.stages:
            for variant in stage.variants:
                model, selector = variant.model, variant.selector
                if selector is not None and not model.manifest.contract_declared and model.backend.describes:
                    targets.setdefault((id(model), selector), variant.target)
    return list(targets.values())


def _asked_version(target: Target) -> str:
    """The version label of metrics and logs before the backend answers (and if it fails): the
    version asked for, else the manifest's; "" for a floating model asked for none (it has no
    version of its own: its answers say which one served)."""
    version = _asked_version_number(target)
    return "" if version is None else str(version)


def _asked_version_number(target: Target) -> int | None:
    """`_asked_version` as a number; None for a floating model asked for none."""
    selector, manifest = target.selector, target.model.manifest
    if selector is not None and selector.version is not None:
        return selector.version
    return None if manifest.floating else manifest.version


def _refuse_mismatched(app: Application) -> None:
    """503 for an application whose discovered contracts do not fit together."""
    if app.problems:
        raise ApplicationContractMismatch("; ".join(app.problems))


def _discovered_inputs(target: Target) -> Mapping[str, TensorSpec] | None:
    """The inputs of the contract the backend described for `target` when the manifest declares
    none (`target_contract`); None: the manifest's, or not discovered yet."""
    if target.model.manifest.contract_declared:
        return None
    contract = target_contract(target)
    return contract.inputs if contract is not None else None


def _stage_inputs(stage: Stage, target: Target, tensors: Mapping[str, NDArray]) -> Mapping[str, NDArray]:
    """What a stage after the first is sent of the outputs before it: the inputs its model takes
    (servers refuse inputs they do not know), as the arrays they are (nothing re-encodes them)."""
    if stage.number == 1:
        return tensors  # decoded against the application's contract: its first stage's inputs
    contract = target_contract(target)
    if contract is None or not contract.inputs:
        return tensors
    return {name: tensors[name] for name in contract.inputs if name in tensors}


def _contract_outputs(app: Application, outputs: dict[str, NDArray], variant: str) -> dict[str, NDArray]:
    """The contract's outputs in contract order (extra outputs are not part of the API), from
    the last stage's answer (by `variant`, as answers name it)."""
    specs = app.signature.outputs
    if not specs:
        return outputs
    missing = [name for name in specs if name not in outputs]
    if missing:
        error = BackendError(f"model {variant} answered without output {missing[0]!r}")
        raise error if len(app.stages) == 1 else error.with_prefix(f"stage {len(app.stages)} ({variant}): ")
    return {name: outputs[name] for name in specs}
