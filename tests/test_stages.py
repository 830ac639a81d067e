"""The stage table and the stages end to end on the smoke preset, checked against independent
recomputations (the task generator, the samples the run kept), and their behaviour on bad input."""

import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmax_core.bundle import read_provenance
from dmax_core.config import load_config
from dmax_core.errors import ConfigError, DataError
from dmax_core.evaluation.records import Cell, Evaluation, Sample
from dmax_core.stages.runner import run_pipeline, run_stage
from dmax_core.stages.table import STAGES, get_stage, plan
from dmax_core.tasks import build_task
from dmax_core.trajectories import TRAJECTORY_FILE

# Every sample is kept, so the cells can be recomputed from samples.jsonl.
KEEP_ALL = ["evaluate.samples_to_keep=1000"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    cfg = load_config("smoke", [f"run_dir={tmp_path_factory.mktemp('smoke') / 'run'}", *KEEP_ALL])
    return cfg, run_pipeline(cfg)


def test_the_plan_follows_the_table_and_skips_pretrain_for_a_given_base(tmp_path):
    assert [s.name for s in STAGES] == ["pretrain", "distill", "train", "evaluate", "report"]
    assert [s.name for s in plan(load_config("smoke"))] == [s.name for s in STAGES]
    with_base = load_config("smoke", [f"model.base_path={tmp_path}"])
    assert [s.name for s in plan(with_base)] == ["distill", "train", "evaluate", "report"]
    skipped = run_stage("pretrain", with_base)
    assert skipped.outputs == {} and "model.base_path is set" in skipped.skipped
    with pytest.raises(DataError, match=r"model\.base_path /nowhere/llada2-mini is not a directory"):
        plan(load_config("smoke", ["model.base_path=/nowhere/llada2-mini"]))
    with pytest.raises(ValueError, match="unknown stage 'deploy'"):
        get_stage("deploy")


def test_pipeline_results_name_what_was_written(smoke_run):
    cfg, results = smoke_run
    run_dir = cfg.run_dir
    assert {name: dict(r.outputs) for name, r in results.items()} == {
        "pretrain": {"base": run_dir / "base"}, "distill": {"trajectories": run_dir / "trajectories"},
        "train": {"dmax": run_dir / "dmax"}, "evaluate": {"eval": run_dir / "eval"},
        "report": {"report": run_dir / "report"},
    }
    for name in ("base", "dmax"):
        assert {"model.safetensors", "config.json", "SHA256SUMS", "tokenizer.json", "dmax_bundle.json"} <= {
            p.name for p in (run_dir / name).iterdir()}
    assert read_provenance(run_dir / "base")["steps"] == cfg.pretrain.steps
    train = results["train"]
    assert train.candidate.output == "dmax" and train.candidate.family == "oput"
    assert train.tags["dmax.dataset_digest"] == results["distill"].tags["dmax.dataset_digest"]
    assert read_provenance(run_dir / "dmax")["dataset_digest"] == train.tags["dmax.dataset_digest"]
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".")]  # no temporary leftovers


def test_trajectories_are_the_first_training_prompts_of_the_task(smoke_run):
    cfg, _ = smoke_run
    task = build_task(cfg.task.name, **cfg.task.knobs)  # drawn again, independently of the run
    expected = [p.question for p in task.splits()["train"][: cfg.distill.n_prompts]]
    table = pq.read_table(cfg.run_dir / "trajectories" / TRAJECTORY_FILE)
    assert table.column("question").to_pylist() == expected
    manifest = json.loads((cfg.run_dir / "trajectories" / "manifest.json").read_text())
    assert manifest["rows"] == cfg.distill.n_prompts and len(manifest["digest"]) == 64


def test_every_cell_recomputes_from_the_samples_it_kept(smoke_run):
    cfg, results = smoke_run
    evaluation = results["evaluate"].evaluation
    assert Evaluation.load(cfg.run_dir / "eval" / "metrics.json") == evaluation
    ev = cfg.evaluate
    own = cfg.task.name
    expected_grid = {(own, m, d, t, "test") for m in ev.models for d in ev.decoders for t in ev.thresholds}
    expected_grid |= {(own, "dmax", "spd", t, "validation") for t in ev.thresholds}
    assert {c.key for c in evaluation.cells} == expected_grid
    task = build_task(cfg.task.name, **cfg.task.knobs)
    rows = [json.loads(line) for line in (cfg.run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    problems = {p.question: p for split in task.splits().values() for p in split}
    for cell in evaluation.cells:
        kept = [r for r in rows if (r["task"], r["model"], r["decoder"], r["threshold"], r["split"]) == cell.key]
        samples = [Sample(**{k: v for k, v in r.items()
                             if k not in ("task", "model", "decoder", "threshold", "split")}) for r in kept]
        assert len(samples) == cell.n == (cfg.task.n_test if cell.split == "test" else cfg.task.n_validation)
        speed = {name: getattr(cell, name) for name in ("batch_size", "throughput", "forwards_per_second", "mbu")}
        assert Cell.from_samples(cell.model, cell.decoder, cell.threshold, cell.split, samples, task=cell.task,
                                 **speed) == cell
        assert cell.throughput >= 0 and cell.forwards_per_second > 0  # the smoke model writes no tokens
        for s in samples:  # each verdict is the task's own scorer's
            assert s.correct == task.is_correct(s.text, problems[s.question])
    # an untrained model must not produce a headline ratio
    assert not evaluation.headline.valid and "under-trained" in evaluation.headline.reason
    stage_metrics = results["evaluate"].metrics
    assert {k: v for k, v in stage_metrics.items() if "/rank/" not in k} == {
        "headline_valid": 0.0, f"eval/{own}/headline/valid": 0.0}
    assert {k: v for k, v in stage_metrics.items() if "/rank/" in k} == evaluation.rankings[own].metrics()


def test_evaluation_is_deterministic(smoke_run):
    cfg, results = smoke_run
    again = run_stage("evaluate", cfg).evaluation
    timing = {"tps": 0.0, "tps_total": 0.0, "throughput": 0.0, "forwards_per_second": 0.0}
    first = results["evaluate"].evaluation.cells
    assert [replace(c, **timing) for c in again.cells] == [replace(c, **timing) for c in first]


def test_report_renders_the_evaluation(smoke_run):
    cfg, results = smoke_run
    text = (cfg.run_dir / "report" / "report.md").read_text()
    assert text.startswith("# dmax evaluation report — preset `smoke`")
    assert "**Headline not computed:** base model under-trained" in text
    grid, compared = text.split("### Decoders compared on ")
    assert grid.count("| dmax | spd |") == 2 * len(cfg.evaluate.thresholds)  # test and validation tables
    assert compared.count("| dmax | spd |") == 1  # one row per (model, decoder) in the ranking
    assert (cfg.run_dir / "report" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cfg.run_dir / "report" / "tasks" / f"frontiers-{cfg.task.name}.png").read_bytes()[:4] == b"\x89PNG"
    plot_data = json.loads((cfg.run_dir / "report" / "tradeoff.json").read_text())
    assert len(plot_data) == len(results["evaluate"].evaluation.select(split="test"))


def test_the_control_objective_writes_control_and_never_dmax(smoke_run):
    cfg, _ = smoke_run
    before = (cfg.run_dir / "dmax" / "model.safetensors").read_bytes()
    control = run_stage("train", load_config("smoke", [f"run_dir={cfg.run_dir}", "train.objective=sft"]))
    assert dict(control.outputs) == {"control": cfg.run_dir / "control"}
    assert control.candidate.family == "sft" and control.candidate.output == "control"
    assert (cfg.run_dir / "dmax" / "model.safetensors").read_bytes() == before
    assert read_provenance(cfg.run_dir / "control")["objective"] == "sft"


def test_corrupt_trajectories_fail_in_words_and_leave_dmax_untouched(smoke_run):
    cfg, _ = smoke_run
    directory = cfg.run_dir / "trajectories"
    traj, manifest = directory / TRAJECTORY_FILE, directory / "manifest.json"
    original, original_manifest = traj.read_bytes(), manifest.read_text()
    before = (cfg.run_dir / "dmax" / "model.safetensors").read_bytes()
    try:
        traj.write_bytes(original[:-20] + bytes(20))  # damaged after distill wrote it
        with pytest.raises(DataError, match=r"trajectories\.parquet does not match the digest in manifest\.json"):
            run_stage("train", cfg)
        manifest.unlink()  # without the manifest the file itself is checked
        traj.write_bytes(b"this is not parquet")
        with pytest.raises(DataError, match="corrupt or not parquet"):
            run_stage("train", cfg)
        pq.write_table(pa.table({"prompt": ["x"]}), traj)
        with pytest.raises(DataError, match="lacks column"):
            run_stage("train", cfg)
    finally:
        traj.write_bytes(original)
        manifest.write_text(original_manifest)
    assert (cfg.run_dir / "dmax" / "model.safetensors").read_bytes() == before


def test_missing_inputs_are_clear_errors(tmp_path):
    cfg = load_config("smoke", [f"run_dir={tmp_path}"])
    with pytest.raises(DataError, match="checkpoint directory not found"):
        run_stage("distill", cfg)
    with pytest.raises(DataError, match="trajectory file not found"):
        run_stage("train", cfg)
    with pytest.raises(DataError, match="metrics file not found"):
        run_stage("report", cfg)


def test_sharded_distillation_merges_to_the_unsharded_dataset(tmp_path):
    """Three shards decoded apart (one alone first, as a worker would) merge into the unsharded parquet, byte
    for byte; a decoded shard is not decoded again; a shard index outside the shards is a config error."""
    from dmax_core.stages.distill import pending_shards, shard_problems

    problems = list(range(11))
    assert [len(shard_problems(problems, i, 3)) for i in range(3)] == [4, 4, 3]
    assert [p for i in range(3) for p in shard_problems(problems, i, 3)] == problems
    common = ["model.base_path=models/ledger-base", "distill.gen_length=48", "distill.n_prompts=10",
              "distill.batch_size=4"]
    plain = load_config("smoke", [*common, f"run_dir={tmp_path / 'plain'}"])
    run_stage("distill", plain)
    sharded = load_config("smoke", [*common, f"run_dir={tmp_path / 'sharded'}", "distill.shards=3"])
    one = run_stage("distill", load_config("smoke", [*common, f"run_dir={tmp_path / 'sharded'}", "distill.shards=3",
                                                     "distill.shard=1"]))
    assert list(one.outputs) == ["shard-1"] and pending_shards(sharded) == [0, 2]
    stamp = (one.outputs["shard-1"] / "manifest.json").stat().st_mtime_ns
    run_stage("distill", sharded)
    assert pending_shards(sharded) == []
    assert (one.outputs["shard-1"] / "manifest.json").stat().st_mtime_ns == stamp  # not decoded again
    parquet = "trajectories/trajectories.parquet"
    assert (sharded.run_dir / parquet).read_bytes() == (plain.run_dir / parquet).read_bytes()
    with pytest.raises(ConfigError, match=r"distill\.shard=3 is not one of the 3 shards"):
        load_config("smoke", ["distill.shards=3", "distill.shard=3"])
