"""An experiment shaped like the real-model presets, end to end on a CPU, and the experiment as configuration.

`tiny-files` (params/tiny-files.yaml) reads its base from a directory (the trained ledger base of
models/ledger-base, no pretraining), its distillation prompts from a file and its evaluated task
from a file of ledger problems scored as `ledger`; the DMax threshold is chosen on a held-out slice of
that file. Scaled down here (fewer prompts, steps and problems), tracked in a real MLflow sqlite store.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from PIL import Image

from dmax_core.config import load_config
from dmax_core.decoding import POLICIES
from dmax_core.decoding.policies.threshold import ThresholdPolicy
from dmax_core.evaluation.records import Evaluation
from dmax_core.stages.runner import run_pipeline, run_stage
from dmax_core.tasks import build_task
from dmax_core.tracking import Tracker, registered_model_name, tracking_client

SMALL = ["distill.n_prompts=48", "train.steps=12", "train.checkpoint_every=100", "evaluate.thresholds=[1.0, 0.7, 0.0]",
         "evaluate.samples_to_keep=0", "report.trace_samples=1",
         'evaluate.tasks=[{name: problem_file, path: tests/assets/ledger-files/test.jsonl, limit: 60}]',
         "experiment.tasks.problem_file.holdout=20"]


@pytest.fixture(scope="module")
def files_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    cfg = load_config("tiny-files", [f"run_dir={root / 'run'}", *SMALL])
    tracker = Tracker(tracking_client(f"sqlite:///{root / 'mlruns.db'}"))
    return cfg, tracker, run_pipeline(cfg, tracker=tracker)


def test_the_file_task_scores_as_the_task_it_came_from():
    task = build_task("problem_file", path="tests/assets/ledger-files/test.jsonl", limit=3)
    ledger = build_task("ledger")
    problem = task.splits()["test"][0]
    assert problem.task == "ledger" and task.prompt(problem) == ledger.prompt(problem)
    assert task.is_correct(problem.answer, problem) and ledger.is_correct(problem.answer, problem)
    assert not task.is_correct("Tom has 1 + 1 = 3 .", problem)
    with pytest.raises(ValueError, match="not an embedded"):
        build_task("problem_file", path="x.jsonl", scored_as="gsm8k")


def test_a_real_shaped_run_gets_a_headline_a_plot_and_a_champion(files_run):
    cfg, tracker, results = files_run
    assert "pretrain" not in results  # the base is read from its directory
    evaluation = Evaluation.load(cfg.run_dir / "eval" / "metrics.json")
    assert list(evaluation.headlines) == ["problem_file"]  # the prompt set has no answers: not evaluated
    headline = evaluation.headlines["problem_file"]
    assert headline.valid, headline.reason
    assert headline == evaluation.headline  # the primary task's headline is the run's
    assert (headline.baseline.model, headline.baseline.decoder, headline.baseline.split) == (
        "base", "threshold", "test")
    assert (headline.method.model, headline.method.decoder, headline.method.split) == ("dmax", "spd", "test")
    assert "chosen on validation" in headline.reason and headline.tpf_ratio_interval is not None
    # the held-out slice: 20 validation problems, chosen on, disjoint from the 40 test problems
    sizes = evaluation.settings["tasks"]["problem_file"]
    assert sizes == {"test": 40, "validation": 20}
    assert {c.n for c in evaluation.select(task="problem_file", split="validation")} == {20}
    assert {(c.model, c.decoder) for c in evaluation.select(split="validation")} == {("dmax", "spd")}

    report = cfg.run_dir / "report"
    picture = Image.open(report / "tasks" / "tradeoff-problem_file.png")
    assert picture.size[0] > 400 and len(set(picture.convert("L").getdata())) > 10  # drawn, not blank
    assert (report / "tradeoff.png").read_bytes() == (report / "tasks" / "tradeoff-problem_file.png").read_bytes()
    rows = json.loads((report / "tradeoff.json").read_text())
    assert rows and {r["task"] for r in rows} == {"problem_file"} and len(rows) == len(evaluation.select(split="test"))
    text = (report / "report.md").read_text()
    assert "## problem_file (primary" in text and "held out (experiment.tasks.problem_file.holdout)" in text

    client = tracker.client
    experiment = client.get_experiment_by_name("dmax").experiment_id
    run = client.search_runs([experiment], "tags.`dmax.stage` = 'evaluate'")[0]
    assert run.data.metrics["eval/problem_file/headline/tpf_ratio"] == pytest.approx(headline.tpf_ratio)
    assert run.data.metrics["eval/problem_file/headline/valid"] == 1.0
    assert run.data.metrics["tpf_ratio"] == pytest.approx(headline.tpf_ratio)
    name = registered_model_name(cfg.preset, "oput")
    champion = client.get_model_version_by_alias(name, "champion")  # the first evaluated version
    assert champion.tags["dmax.champion_decision"] == "no champion yet"


@pytest.fixture
def throwaway_policy():
    """A decoding policy that exists only in this test: threshold decoding under another name."""

    class Throwaway(ThresholdPolicy):
        name: ClassVar[str] = "throwaway_for_tests"

    yield Throwaway
    POLICIES._classes.pop(Throwaway.name)


def test_a_new_policy_is_the_method_under_test_by_configuration_alone(files_run, throwaway_policy):
    cfg, _, _ = files_run
    cfg = load_config("tiny-files", [f"run_dir={cfg.run_dir}", *SMALL, "evaluate.models=[base]",
                                     "evaluate.decoders=[threshold, throwaway_for_tests]",
                                     "experiment.method={model: base, decoder: throwaway_for_tests, threshold: 0.7}"])
    evaluation = run_stage("evaluate", cfg).evaluation
    headline = evaluation.headlines["problem_file"]
    assert headline.valid, headline.reason
    assert headline.method.label == "base+throwaway_for_tests@0.7" and "fixed threshold 0.7" in headline.reason
    twin = evaluation.select(task="problem_file", model="base", decoder="threshold", threshold=0.7, split="test")[0]
    assert (headline.method.accuracy, headline.method.tpf) == (twin.accuracy, twin.tpf)  # the same rule, renamed
    # no validation cells: nothing chooses on it (the baseline chooses on test, the method is fixed)
    assert not evaluation.select(split="validation")


def test_experiment_names_only_evaluated_tasks():
    from dmax_core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"experiment names task\(s\) \['gsm8k'\] that are not evaluated"):
        load_config("tiny-files", ["experiment.primary=gsm8k"])


def test_the_paper_presets_state_the_paper_comparison():
    math, code = load_config("llada2-mini"), load_config("llada2-mini-code")
    for cfg, threshold, primary in ((math, 0.5, "gsm8k"), (code, 0.65, "humaneval")):
        baseline, method = cfg.experiment.arms(primary)
        assert (baseline.model, baseline.decoder, baseline.fixed) == ("base", "threshold", 0.95)
        assert (method.model, method.decoder, method.fixed) == ("dmax", "spd", threshold)
        assert cfg.primary_task == primary and cfg.experiment.min_base_accuracy is None
