"""A reload that changes only a model's `request_log` (a gateway-side setting) neither restarts
its embedded runtime nor warms a remote model again; any other change still does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.manifests import load_config
from gateway.reload import ConfigStager
from gateway.settings import Settings
from gateway.supervisor import Supervisor
from tests.conftest import write_model
from tests.tfserving_server import FakeTFServing
from tests.warmup_files import predict_log, write_warmup

INCREMENT = "def predict(x):\n    return x + 1\n"


def _log(directory: Path, sample_rate: float) -> str:
    return f"request_log:\n  sample_rate: {sample_rate}\n  file: {{dir: {directory}}}\n"


async def test_a_local_model_whose_request_log_changed_keeps_its_runtime(tmp_path: Path) -> None:
    root, logs = tmp_path / "config", tmp_path / "logs"
    folder = write_model(root, "m", "m", INCREMENT, extra=_log(logs, 1.0))
    supervisor = Supervisor(load_config(root).local_models(), start_timeout_s=30)
    try:
        targets, failed = await supervisor.start()
        assert failed == {}
        [running] = supervisor.processes.values()
        manifest = folder / "serving.yaml"
        manifest.write_text(manifest.read_text().replace("sample_rate: 1.0", "sample_rate: 0.25\n  # sampled"))
        staged = await supervisor.stage(load_config(root).local_models())
        assert staged.started == {}  # the runtime in service is kept
        assert staged.targets == targets
        assert supervisor.commit(staged) == []
        assert list(supervisor.processes.values()) == [running]
        (folder / "src" / "func_main.py").write_text(INCREMENT.replace("1", "2"))  # its code: a new runtime
        staged = await supervisor.stage(load_config(root).local_models())
        assert list(staged.started) == [("m", 1)]
        await supervisor.abort(staged)
    finally:
        await supervisor.stop()


async def test_a_remote_model_whose_request_log_changed_is_not_warmed_again(tmp_path: Path,
                                                                            tfs: FakeTFServing) -> None:
    root, logs = tmp_path / "config", tmp_path / "logs"
    write_warmup(root / "models" / "warmup.tfrecord",
                 [predict_log({"input_1": np.array([[1, 2]], dtype=np.float32)}, "whatever", "serving_default")])
    document = root / "models" / "toy.yaml"

    def write(sample_rate: float, labels: str = "") -> None:
        document.write_text(
            f"kind: Model\nname: toy\nwarmup: warmup.tfrecord\n{labels}"
            f"backend: {{protocol: tensorflow-serving, target: '{tfs.target}', model_name: Toy, version: 2}}\n"
            + _log(logs, sample_rate))

    def warmups() -> int:
        return sum(method == "Predict" for method, _ in tfs.calls)

    write(1.0)
    stager = ConfigStager(Settings(config_dir=root), load_config(root), None)
    write(0.5)
    stager.commit(await stager.stage())
    assert warmups() == 0
    write(0.5, labels="version_labels: {stable: 2}\n")  # a change that serves it differently
    stager.commit(await stager.stage())
    assert warmups() == 1
