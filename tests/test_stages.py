"""The stage functions end to end on the smoke preset, and their behaviour on bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmax_core import stages
from dmax_core.errors import DataError


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from dmax_core.config import load_config

    cfg = load_config("smoke", [f"run_dir={tmp_path_factory.mktemp('smoke') / 'run'}"])
    paths = stages.run_pipeline(cfg)
    return cfg, paths


def test_pipeline_writes_every_output(smoke_run):
    cfg, paths = smoke_run
    for name in ("base", "dmax"):
        d = cfg.run_dir / name
        assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
        assert (d / "tokenizer.json").is_file() and (d / "dmax_bundle.json").is_file()
    manifest = json.loads((cfg.run_dir / "trajectories" / "manifest.json").read_text())
    assert manifest["rows"] == cfg.distill.n_prompts and len(manifest["digest"]) == 64
    metrics = json.loads(paths["evaluate"].read_text())
    n_grid = len(cfg.evaluate.models) * len(cfg.evaluate.decoders) * len(cfg.evaluate.thresholds)
    assert len([c for c in metrics["cells"] if c["split"] == "test"]) == n_grid
    for c in metrics["cells"]:
        assert c["n"] == (cfg.task.n_test if c["split"] == "test" else cfg.task.n_validation)
        assert 0.0 <= c["accuracy"] <= 1.0 and c["nfe_mean"] >= 1
    assert (paths["report"] / "report.md").read_text().startswith("# dmax evaluation report")
    assert (paths["report"] / "tradeoff.png").stat().st_size > 1000
    # no temporary leftovers anywhere in the run directory
    assert not [p for p in cfg.run_dir.rglob("*") if p.name.startswith(".")]


def test_corrupt_trajectories_fail_in_words_and_leave_dmax_untouched(smoke_run):
    cfg, _ = smoke_run
    traj = cfg.run_dir / "trajectories" / stages.TRAJECTORY_FILE
    original = traj.read_bytes()
    before = (cfg.run_dir / "dmax" / "model.safetensors").read_bytes()
    try:
        traj.write_bytes(b"this is not parquet")
        with pytest.raises(DataError, match="corrupt or not parquet"):
            stages.train(cfg)
        pq.write_table(pa.table({"prompt": ["x"]}), traj)
        with pytest.raises(DataError, match="lacks column"):
            stages.train(cfg)
    finally:
        traj.write_bytes(original)
    assert (cfg.run_dir / "dmax" / "model.safetensors").read_bytes() == before


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from dmax_core.config import load_config

    cfg = load_config("smoke", [f"run_dir={tmp_path}"])
    with pytest.raises(DataError, match="checkpoint directory not found"):
        stages.distill(cfg)
    with pytest.raises(DataError, match="metrics file not found"):
        stages.report(cfg)
