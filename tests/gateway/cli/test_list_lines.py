"""`gateway list`'s tables from listings: an application that is not ready, labels, an
unavailable model (pure: what the listing routes answer, as JSON)."""

from __future__ import annotations

from gateway.cli.listing import lines
from gateway.client import Application, ModelVersion

PLAN = {"name": "typed", "inputs": None, "outputs": None, "dropped": [], "shadow_problems": [],
        "problems": ["stage 2 (b:1) input 'x' is not an output of stage 1 (a:1) (its outputs: 'y')"],
        "stages": [{"stage": 1, "inputs": None, "outputs": None,
                    "variants": [{"model": "a:1", "shadow": False, "weight": 100, "share": 100.0}]},
                   {"stage": 2, "inputs": None, "outputs": None,
                    "variants": [{"model": "b:1", "shadow": False, "weight": 75, "share": 75.0},
                                 {"model": "b:2", "shadow": False, "weight": 25, "share": 25.0},
                                 {"model": "b:3", "shadow": True, "sample": 0.5}]}]}
MODEL = {"name": "far", "version": 3, "labels": {"stable": 3, "canary": 4}, "kind": "tensorflow-serving",
         "state": "unavailable", "contract": "unknown", "signature_name": None, "inputs": None, "outputs": None,
         "applications": ["typed"], "error": "its backend does not answer"}


def test_a_problem_makes_an_application_not_ready_and_is_listed() -> None:
    app = Application.from_json(PLAN)
    assert not app.ready
    assert lines([app], [ModelVersion.from_json(MODEL)]) == [
        "APPLICATION  READY  STAGES",
        "typed        no     a:1 -> b:1 75% | b:2 25% | b:3 (shadow 50%)",
        "",
        "MODEL  VERSION  LABELS  KIND                STATE        CONTRACT  APPLICATIONS",
        "far    3        stable  tensorflow-serving  unavailable  unknown   typed",
        "",
        "problem: typed: stage 2 (b:1) input 'x' is not an output of stage 1 (a:1) (its outputs: 'y')",
        "problem: far:3: its backend does not answer",
    ]


def test_a_model_fronting_every_version_is_listed_as_star_with_each_label() -> None:
    floating = {**MODEL, "name": "toy", "version": 0, "labels": {"stable": 1, "canary": 2}, "state": "ready",
                "contract": "discovered", "error": None}
    pinned = {**MODEL, "name": "toy_one", "version": 1, "labels": {}, "state": "not_ready", "contract": "declared",
              "error": None}
    assert lines([], [ModelVersion.from_json(floating), ModelVersion.from_json(pinned),
                      ModelVersion.from_json({**floating, "name": "down", "labels": {}, "state": "unavailable",
                                              "error": "its backend does not answer"})]) == [
        "APPLICATION  READY  STAGES",
        "",
        "MODEL    VERSION  LABELS             KIND                STATE        CONTRACT    APPLICATIONS",
        "toy      *        canary=2,stable=1  tensorflow-serving  ready        discovered  typed",
        "toy_one  1        -                  tensorflow-serving  not_ready    declared    typed",
        "down     *        -                  tensorflow-serving  unavailable  discovered  typed",
        "",
        "problem: down:*: its backend does not answer",
    ]
