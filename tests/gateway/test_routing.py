"""Routing within a stage: the weighted draw, sticky keys, the override header; the routers
alone, through the data plane with in-memory backends, and over HTTP with the real runtime."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from gateway import registry
from gateway.app import create_app
from gateway.backends import Selector
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BadRequest
from gateway.manifests import (
    ApplicationManifest,
    ModelRef,
    Stage,
    VariantManifest,
    load_config,
)
from gateway.observability import AccessLog, Metrics
from gateway.registry import Application, Model, Registry, Variant
from gateway.routing import MAX_ROUTE_KEY_BYTES, Router, choose_variant, route_key, variant_override
from gateway.settings import ApiKey, AuthSettings, Settings
from tensorcodecs import Signature
from tests.conftest import CONFIG_DIR, runtimes_for, serve_app, write_model
from tests.doubles import InMemoryBackend

MANIFEST = load_config(CONFIG_DIR).models[("increment_model", 1)]
ROOT = Path(__file__).resolve().parents[2]
# The 0.999 quantile of the chi-square distribution (p = 0.001) by degrees of freedom.
CHI2_CRITICAL = {1: 10.828, 2: 13.816, 3: 16.266}


def _variant(name: str, weight: int, *, shadow: bool = False, backend: InMemoryBackend | None = None) -> Variant:
    manifest = dataclasses.replace(MANIFEST, name=name)
    function = backend or InMemoryBackend(lambda inputs: {"number": inputs["number"]}, name=name)
    return Variant(Model(manifest, function), weight, None,
                   VariantManifest(ModelRef(name, Selector(1)), weight, shadow))


def _stage(weights: Mapping[str, int], number: int = 1) -> registry.Stage:
    return registry.Stage(number, tuple(_variant(name, weight) for name, weight in weights.items()))


def _application(*stages: registry.Stage, name: str = "app") -> Application:
    manifests = tuple(Stage(tuple(v.manifest for v in (*s.live, *s.shadows) if v.manifest is not None))
                      for s in stages)
    return Application(name, stages, Signature(name), ApplicationManifest(name, manifests, "test"))


def _context(key: str | None = None, override: tuple[str, ...] = ()) -> RequestContext:
    context = RequestContext.start("r", 10.0)
    context.route_key, context.variant_override = key, override
    return context


def _chi_square(counts: Mapping[str, int], weights: Mapping[str, int]) -> float:
    """Pearson's statistic of `counts` against the shares `weights` expects (positive weights)."""
    total, weight_sum = sum(counts.values()), sum(weights.values())
    expected = {name: total * weight / weight_sum for name, weight in weights.items() if weight > 0}
    return sum((counts.get(name, 0) - e) ** 2 / e for name, e in expected.items())


@pytest.fixture
def seeded() -> Iterator[None]:
    """The global random generator (what the data plane draws from) seeded, then restored."""
    state = random.getstate()
    random.seed(15)
    yield
    random.setstate(state)


# ------------------------------------------------------------------ the weighted draw


def _keyed(weights: Mapping[str, int], count: int) -> Counter[str]:
    router = Router(_stage(weights).live)
    return Counter(router.for_key(f"user-{number}").name for number in range(count))


@pytest.mark.usefixtures("seeded")
async def test_ten_thousand_calls_through_the_data_plane_match_the_weights() -> None:
    weights = {"a": 60, "b": 30, "c": 10, "off": 0}
    backends = {name: InMemoryBackend(dict, name=name) for name in weights}
    app = _application(registry.Stage(1, tuple(_variant(name, weight, backend=backends[name])
                                                for name, weight in weights.items())))
    plane = DataPlane(Registry({}, {}))
    for _ in range(10_000):
        await plane.predict(app, {"number": np.array([1], np.int32)}, RequestContext.start("r", 10.0))
    counts = {name: len(backend.calls) for name, backend in backends.items()}
    assert counts["off"] == 0
    assert sum(counts.values()) == 10_000
    statistic = _chi_square(counts, weights)
    assert statistic < CHI2_CRITICAL[2], counts


def test_weight_zero_is_never_drawn_even_at_the_edges_of_the_unit_interval() -> None:
    router = Router(_stage({"off": 0, "a": 1, "zero": 0, "b": 1, "last": 0}).live)
    draws = [0.0, 0.5 - 2**-53, 0.5, 1 - 2**-53, *np.linspace(0, 1, 1001, endpoint=False)]
    assert {router.weighted(float(u)).name for u in draws} == {"a:1", "b:1"}
    assert router.weighted(0.0).name == "a:1"
    assert router.weighted(0.5).name == "b:1"


def test_one_live_variant_needs_no_draw() -> None:
    stage = registry.Stage(1, (_variant("a", 100),), (_variant("shadow", 0, shadow=True),))

    def no_draw() -> float:
        raise AssertionError("a stage of one live variant drew")

    assert stage.router.choose(_context(), no_draw) is stage.live[0]
    assert stage.router.choose(_context(key="k"), no_draw) is stage.live[0]


def test_the_router_is_built_once_per_stage() -> None:
    stage = _stage({"a": 1, "b": 1})
    router = stage.router
    choose_variant(stage, _context())
    assert stage.router is router
    assert dataclasses.replace(stage).router is not router  # a reload builds new stages, and routers


# ------------------------------------------------------------------ sticky keys


def test_a_key_sticks_to_one_variant_across_routers_built_anew() -> None:
    weights = {"a": 50, "b": 30, "c": 20}
    first = _stage(weights)
    again = _stage(weights)  # another worker, or after a restart
    keys = [f"user-{number}" for number in range(1000)]
    picks = [choose_variant(first, _context(key)).name for key in keys]
    assert picks == [choose_variant(again, _context(key)).name for key in keys]
    assert picks == [choose_variant(first, _context(key)).name for key in keys]
    assert len(set(picks)) == 3


def test_keys_spread_by_weight_and_never_to_weight_zero() -> None:
    weights = {"a": 60, "b": 30, "c": 10, "off": 0}
    counts = _keyed(weights, 10_000)
    assert "off:1" not in counts
    assert _chi_square(counts, {f"{name}:1": w for name, w in weights.items()}) < CHI2_CRITICAL[2], counts


def test_keys_map_to_the_same_variants_in_a_process_of_another_hash_seed() -> None:
    script = ("from tests.gateway.test_routing import _keyed_names; import json; "
              "print(json.dumps(_keyed_names()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60, check=True)
    assert json.loads(child.stdout) == _keyed_names()


def _keyed_names() -> list[str]:
    router = Router(_stage({"a": 50, "b": 30, "c": 20}).live)
    return [router.for_key(f"user-{number}").name for number in range(1000)]


GOLDEN_NON_ASCII = ["a:1", "a:1", "c:1", "b:1", "c:1", "a:1", "a:1", "a:1", "a:1", "b:1", "b:1", "a:1"]


def test_the_hash_is_pinned_so_an_upgrade_moves_no_key() -> None:
    # Golden values: a change of hash or score would move every sticky key of every user.
    assert _keyed_names()[:12] == ["a:1", "c:1", "b:1", "a:1", "b:1", "b:1", "a:1", "b:1", "a:1", "a:1", "a:1", "c:1"]


def test_a_weight_change_moves_few_keys_and_only_to_the_variant_that_grew() -> None:
    before = Router(_stage({"a": 50, "b": 50}).live)
    after = Router(_stage({"a": 60, "b": 40}).live)
    keys = [f"user-{number}" for number in range(10_000)]
    moved = [(before.for_key(key).name, after.for_key(key).name) for key in keys]
    moves = [pair for pair in moved if pair[0] != pair[1]]
    assert 0.07 < len(moves) / len(keys) < 0.13  # the minimum is the 10 % that changed hands
    assert set(moves) == {("b:1", "a:1")}


def test_adding_a_variant_takes_keys_only_for_itself() -> None:
    before = Router(_stage({"a": 50, "b": 50}).live)
    after = Router(_stage({"a": 50, "b": 50, "canary": 0}).live)
    grown = Router(_stage({"a": 50, "b": 50, "canary": 10}).live)
    keys = [f"user-{number}" for number in range(5000)]
    assert [before.for_key(k) .name for k in keys] == [after.for_key(k).name for k in keys]
    moves = {(before.for_key(k).name, grown.for_key(k).name) for k in keys} - {("a:1", "a:1"), ("b:1", "b:1")}
    assert moves == {("a:1", "canary:1"), ("b:1", "canary:1")}


def _as_received(text: str) -> str:
    """A header value as the gateway reads it: its UTF-8 bytes decoded as latin-1 (gateway.body)."""
    return text.encode().decode("latin-1")


@pytest.mark.parametrize("key", ["", "x" * (MAX_ROUTE_KEY_BYTES + 1),
                                 _as_received("é" * (MAX_ROUTE_KEY_BYTES // 2 + 1))])
def test_route_keys_empty_or_too_long_are_refused(key: str) -> None:
    with pytest.raises(BadRequest, match="x-gateway-route-key"):
        route_key(key)
    assert route_key("x" * MAX_ROUTE_KEY_BYTES) == "x" * MAX_ROUTE_KEY_BYTES


def test_a_route_key_is_measured_and_hashed_on_the_bytes_received() -> None:
    key = _as_received("ж" * 400)  # 800 bytes on the wire
    assert route_key(key) == key
    with pytest.raises(BadRequest) as error:
        route_key(_as_received("ж" * 513))
    assert error.value.message == "x-gateway-route-key is 1026 bytes long; the limit is 1024"
    router = Router(_stage({"a": 50, "b": 30, "c": 20}).live)
    # Golden values on non-ASCII keys: each byte received hashed once (pinned like the ASCII ones).
    names = [router.for_key(_as_received(f"пользователь-{number}")).name for number in range(12)]
    assert names == GOLDEN_NON_ASCII


# ------------------------------------------------------------------ the override


def test_the_override_forces_a_live_variant_even_of_weight_zero() -> None:
    stage = _stage({"a": 100, "dark": 0})
    app = _application(stage, _stage({"c": 1, "d": 1}, number=2))
    override = variant_override(app, " dark:1 ,d:1")
    assert override == ("dark:1", "d:1")
    context = _context(key="user-1", override=override)
    assert [choose_variant(s, context).name for s in app.stages] == ["dark:1", "d:1"]
    partial = _context(key="user-1", override=variant_override(app, "d:1"))  # stage 1 by its key
    assert [choose_variant(s, partial).name for s in app.stages] == [stage.router.for_key("user-1").name, "d:1"]


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("nope:1", "nope:1 is no live variant of application app (stage 1: a:1, b:1; stage 2: c:1)"),
        ("a:2", "a:2 is no live variant"),
        ("ghost:1", "ghost:1 is a shadow of stage 1 of application app; a shadow never serves (live: a:1, b:1)"),
        ("a:1,b:1", "names two variants of stage 1 of application app: a:1 and b:1"),
        ("a:1,,c:1", "holds an empty name"),
    ],
)
def test_override_names_that_are_no_live_variant_are_refused(header: str, words: str) -> None:
    first = registry.Stage(1, (_variant("a", 1), _variant("b", 1)), (_variant("ghost", 0, shadow=True),))
    app = _application(first, _stage({"c": 1}, number=2))
    with pytest.raises(BadRequest) as error:
        variant_override(app, header)
    assert words in error.value.message


def test_the_override_accepts_the_spelling_the_manifest_declared() -> None:
    labelled = Variant(Model(MANIFEST, InMemoryBackend(dict)), 1, Selector(label="stable"),
                       VariantManifest(ModelRef("increment_model", Selector(label="stable"))))
    floating = Variant(Model(dataclasses.replace(MANIFEST, name="toy", version=3), InMemoryBackend(dict)),
                       1, None, VariantManifest(ModelRef("toy")))
    app = _application(registry.Stage(1, (labelled, floating)))
    assert variant_override(app, "increment_model@stable") == ("increment_model@stable",)
    assert variant_override(app, "toy") == ("toy:3",)
    assert variant_override(app, "toy:3") == ("toy:3",)


# ------------------------------------------------------------------ over HTTP, with the real runtime

ADMIN, KEY = "admin-token", "caller-key"


def _add(amount: int, given: str = "x", answered: str = "y", least: int = -100) -> str:
    """A model adding `amount`; it raises on an input below `least`."""
    return (f"def predict({given}):\n    if ({given} < {least}).any():\n        raise ValueError('too small')\n"
            f"    return {{'{answered}': {given} + {amount}}}\n")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1: a (+1) and b (+2), 50/50, dark (+3) at weight 0 and the shadow ghost (+4), all
    failing below -100; stage 2: c (+10), failing below 0. One application allows the override, the other does not."""
    root = tmp_path_factory.mktemp("routing")
    for name, amount in {"a": 1, "b": 2, "dark": 3, "ghost": 4}.items():
        write_model(root, name, name, _add(amount))
    write_model(root, "c", "c", _add(10, "y", "z", least=0), inputs="y: {shape: [-1], type: int32}",
                outputs="z: {shape: [-1], type: int32}")
    pipeline = ("pipeline:\n"
                "  - [{model: a:1, weight: 50}, {model: b:1, weight: 50}, {model: dark:1, weight: 0},\n"
                "     {model: ghost:1, shadow: true}]\n"
                "  - [{model: c:1}]\n")
    (root / "applications").mkdir()
    for name, extra in {"open": "allow_variant_override: true\n", "closed": ""}.items():
        (root / "applications" / f"{name}.yaml").write_text(f"kind: Application\nname: {name}\n{pipeline}{extra}")
    return root


@pytest.fixture
def access_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def client(config_dir: Path, access_log: io.StringIO,
                 request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway serving `config_dir`; with the parameter True, admin tokens and API keys are
    configured."""
    secured = getattr(request, "param", False)
    settings = Settings(access_log=False, auth=AuthSettings(
        api_keys=(ApiKey("caller", hashlib.sha256(KEY.encode()).hexdigest()),) if secured else (),
        admin_token_sha256=(hashlib.sha256(ADMIN.encode()).hexdigest(),) if secured else ()))
    with runtimes_for(load_config(config_dir)) as config:
        app = create_app(settings, config)
        app.state.observer.access_log = AccessLog(Metrics(), access_log)
        async with (
            serve_app(app) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield client


def _answer(response: httpx.Response) -> tuple[int, str, object]:
    return response.status_code, response.headers.get("x-gateway-variants", ""), response.json()


async def test_answers_name_the_variants_that_served_them(client: httpx.AsyncClient) -> None:
    seen: Counter[str] = Counter()
    for _ in range(60):
        response = await client.post("/gateway/applications/open", json={"x": [0]})
        status, variants, body = _answer(response)
        assert status == 200
        assert body == ({"z": [11]} if variants == "a:1, c:1" else {"z": [12]})
        seen[variants] += 1
    assert set(seen) == {"a:1, c:1", "b:1, c:1"}  # 60 draws of 50/50: both (1 - 2**-59)


async def test_a_route_key_sticks_over_http(client: httpx.AsyncClient) -> None:
    for key in ("alice", "bob", "carol", "dave"):
        answers = {_answer(await client.post("/gateway/applications/closed", json={"x": [0]},
                                             headers={"x-gateway-route-key": key}))[1] for _ in range(5)}
        assert len(answers) == 1
    long = await client.post("/gateway/applications/open", json={"x": [0]},
                             headers={"x-gateway-route-key": "k" * (MAX_ROUTE_KEY_BYTES + 1)})
    assert long.status_code == 400
    assert long.json()["error"]["message"] == "x-gateway-route-key is 1025 bytes long; the limit is 1024"
    wide = await client.post("/gateway/applications/open", json={"x": [0]},
                             headers={b"x-gateway-route-key": ("ж" * 512).encode()})  # 1024 bytes of UTF-8
    assert wide.status_code == 200, wide.text


async def _logged(stream: io.StringIO, count: int) -> list[dict[str, object]]:
    """The first `count` access log entries (the log is written by a thread, in batches)."""
    deadline = time.monotonic() + 5
    while len(stream.getvalue().splitlines()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return [orjson.loads(line) for line in stream.getvalue().splitlines()[:count]]


async def test_errors_after_a_stage_ran_name_it(client: httpx.AsyncClient, access_log: io.StringIO) -> None:
    first = await client.post("/gateway/applications/open", json={"x": [-101]},
                              headers={"x-gateway-variant": "dark:1"})
    assert first.status_code == 500
    assert first.headers["x-gateway-variants"] == "dark:1"
    second = await client.post("/gateway/applications/open", json={"x": [-4]},  # dark answers -1
                               headers={"x-gateway-variant": "dark:1"})
    assert second.status_code == 500
    assert second.headers["x-gateway-variants"] == "dark:1, c:1"
    assert [entry["variants"] for entry in await _logged(access_log, 2)] == [["dark:1"], ["dark:1", "c:1"]]
    refused = await client.post("/gateway/applications/open", json={"x": [0]},
                                headers={"x-gateway-variant": "nope:1"})
    assert refused.status_code == 400
    assert "x-gateway-variants" not in refused.headers  # nothing ran


async def test_the_override_forces_variants_where_the_application_allows_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/open", json={"x": [0]},
                                 headers={"x-gateway-variant": "dark:1, c:1", "x-gateway-route-key": "alice"})
    assert _answer(response) == (200, "dark:1, c:1", {"z": [13]})
    closed = await client.post("/gateway/applications/closed", json={"x": [0]},
                               headers={"x-gateway-variant": "dark:1"})
    assert closed.status_code == 403
    assert closed.json() == {"error": {"code": "permission_denied", "message":
                                       "application closed does not allow x-gateway-variant (its manifest "
                                       "may set allow_variant_override: true)"}}
    shadow = await client.post("/gateway/applications/open", json={"x": [0]},
                               headers={"x-gateway-variant": "ghost:1"})
    assert shadow.status_code == 400
    assert "ghost:1 is a shadow of stage 1 of application open; a shadow never serves" in shadow.text
    unknown = await client.post("/gateway/applications/open", json={"x": [0]},
                                headers={"x-gateway-variant": "a:7"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        "x-gateway-variant: a:7 is no live variant of application open "
        "(stage 1: a:1, b:1, dark:1; stage 2: c:1)")


@pytest.mark.parametrize("client", [True], indirect=True)
async def test_the_override_needs_an_admin_token_once_tokens_are_configured(client: httpx.AsyncClient) -> None:
    forced = {"x-gateway-variant": "b:1", "x-api-key": KEY}  # the API key beside the admin token
    refused = await client.post("/gateway/applications/open", json={"x": [0]}, headers=forced)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "x-gateway-variant needs Authorization: Bearer <admin token>"
    wrong = await client.post("/gateway/applications/open", json={"x": [0]},
                              headers={**forced, "authorization": "Bearer guess"})
    assert wrong.status_code == 403
    allowed = await client.post("/gateway/applications/open", json={"x": [0]},
                                headers={**forced, "authorization": f"Bearer {ADMIN}"})
    assert _answer(allowed) == (200, "b:1, c:1", {"z": [12]})
    plain = await client.post("/gateway/applications/open", json={"x": [0]},
                              headers={"x-gateway-route-key": "alice", "authorization": f"Bearer {KEY}"})
    assert plain.status_code == 200  # routing by key needs no token

