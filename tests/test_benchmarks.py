"""Real benchmarks end to end: dataset files in the upstream schemas, the official prompts, scoring by
execution, a checkpoint with its own HF tokenizer, released trajectories, and the pipeline reporting each
benchmark on its own. Expected strings are written out by hand from the DMax task files, not produced by
the code under test."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import llada2_like_tokenizer_dir, tiny_model

from dmax_core.cli import main
from dmax_core.config import load_config
from dmax_core.errors import DataError
from dmax_core.evaluation.records import Evaluation
from dmax_core.stages.runner import run_pipeline, run_stage
from dmax_core.tasks import build_task
from dmax_core.tasks.datafiles import read_rows
from dmax_core.tokenizer import load_tokenizer
from dmax_core.trajectories import load_trajectories, read_manifest

ASSETS = Path(__file__).parent / "assets"
DATA = ASSETS / "benchmarks"
TASKS = [
    {"name": "gsm8k", "path": str(DATA / "gsm8k")},
    {"name": "math500", "path": str(DATA / "math500" / "test.jsonl")},
    {"name": "humaneval", "limit": 2},
    {"name": "mbpp", "path": str(DATA / "mbpp"), "limit": 1},
]


def _cli(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------- files
def test_every_supported_layout_reads_the_same_rows(tmp_path):
    rows = [{"question": "q1", "answer": "a #### 1"}, {"question": "q2", "answer": "b #### 2"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    snapshot = tmp_path / "snapshot" / "main"  # the hub's layout: <config>/<split>-00000-of-00001.parquet
    snapshot.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), snapshot / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), snapshot / "train-00000-of-00001.parquet")
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    for source in ("a.jsonl", "b.json", "c.jsonl.gz", "d.parquet", "snapshot", "saved"):
        _, read = read_rows(str(tmp_path / source), split="test", columns=("question", "answer"), task="gsm8k")
        assert read == rows, source
    _, train = read_rows(str(tmp_path / "snapshot"), split="train", columns=("question",), task="gsm8k")
    assert train == rows[:1]


def test_bad_datasets_fail_in_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "cols.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test.jsonl").write_text("\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
    both = tmp_path / "both"
    for subset in ("main", "socratic"):
        (both / subset).mkdir(parents=True)
        (both / subset / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    cases = {
        "cols.jsonl": "row 0 lacks column 'answer' needed by task gsm8k",
        "empty": "split 'test' holds no rows",
        "broken.parquet": "not a readable parquet file",
        "bad.jsonl": "bad.jsonl:2: not valid JSON",
        "both": "several subsets (main, socratic)",
        "missing": "dataset not found",
    }
    for name, message in cases.items():
        tasks = json.dumps([{"name": "gsm8k", "path": str(tmp_path / name)}])
        code, err = _cli(capsys, "evaluate", "--preset", "smoke", f"run_dir={tmp_path / 'run'}",
                         f"evaluate.tasks={tasks}")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (name, err)
    assert not (tmp_path / "run").exists()  # refused before any model was loaded or anything written
    with pytest.raises(DataError, match="set allow_download=true"):
        read_rows("hub:openai/gsm8k", split="test", columns=("question",), task="gsm8k")


# ------------------------------------------------------------------------------------ prompts, scores
def test_prompts_are_dmax_official_user_turns():
    gsm8k = build_task("gsm8k", path=str(DATA / "gsm8k"))
    problem = gsm8k.splits()["test"][0]
    assert problem.final_answer == "26"
    assert gsm8k.prompt(problem) == ("Question: Tom has 3 boxes with 12 pencils each. He gives away 10 pencils. "
                                     "How many pencils does he have left?\nLet's think step by step\nAnswer:")
    math500 = build_task("math500", path=str(DATA / "math500"))
    problem = math500.splits()["test"][1]
    assert math500.prompt(problem) == ("Solve $x^2 = 16$ for $x > 0$.\nLet's think step by step, and put your "
                                       "final answer within \\boxed{}.")
    fence = "Please enclose your code within delimiters as follows:\n```python\n# YOUR CODE HERE\n```\n\n"
    humaneval = build_task("humaneval", limit=1)
    problem = humaneval.splits()["test"][0]
    assert problem.data["task_id"] == "HumanEval/0" and problem.data["entry_point"] == "has_close_elements"
    assert humaneval.prompt(problem) == ("Write a solution to the following problem and make sure that it passes "
                                         f"the tests:\n```python\n{problem.question}\n```\n\n" + fence)
    mbpp = build_task("mbpp", path=str(DATA / "mbpp"))
    problem = mbpp.splits()["test"][0]
    assert mbpp.prompt(problem) == (
        "You are an expert Python programmer, and here is your task: Write a function to find the shared "
        "elements from the given two lists. Your code should pass these tests:\n\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
        "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))\n\n" + fence)


def test_code_tasks_score_by_running_the_tests():
    humaneval = build_task("humaneval", limit=3)
    for problem in humaneval.splits()["test"]:
        right = f"Here it is:\n```python\n{problem.answer}\n```\nprint('done')"
        assert humaneval.score(right, problem) == {"dmax_compatible": True, "strict": True}
        wrong = f"```python\n{problem.question}    return None\n```"
        assert humaneval.score(wrong, problem) == {"dmax_compatible": False, "strict": False}
        assert humaneval.score("no code at all", problem) == {"dmax_compatible": False, "strict": False}
    mbpp = build_task("mbpp", path=str(DATA / "mbpp"))
    problem = mbpp.splits()["test"][1]
    # A top-level call after the function: DMax keeps only the definitions, the strict score runs it as is.
    answer = f"```python\n{problem.answer}\nprint(is_not_prime(undefined_name))\n```"
    assert mbpp.score(answer, problem) == {"dmax_compatible": True, "strict": False}


def test_math_tasks_report_both_scores():
    gsm8k = build_task("gsm8k", path=str(DATA / "gsm8k"))
    problem = gsm8k.splits()["test"][1]  # gold "2,250" -> 2250
    assert gsm8k.score("She pays 2400 - 150 = 2250 dollars. The answer is 2250.", problem) == {
        "dmax_compatible": True, "strict": True}
    assert gsm8k.score("The answer is 2251.", problem) == {"dmax_compatible": False, "strict": False}
    math500 = build_task("math500", path=str(DATA / "math500"))
    problem = math500.splits()["test"][0]
    assert math500.score("So the sum is $\\boxed{\\dfrac{5}{6}}$.", problem) == {
        "dmax_compatible": True, "strict": True}


# -------------------------------------------------------------------------------- real checkpoints
def test_a_checkpoint_with_its_own_hf_tokenizer_evaluates(tmp_path):
    """LLaDA2.0-mini's tokenizer_config (official template) + a small BPE with its special tokens, a model
    whose config.json does not name the mask id (as the released one does not): the ids come from the
    tokenizer, and the benchmarks decode and score through the real template."""
    checkpoint = llada2_like_tokenizer_dir(tmp_path / "ckpt", [json.dumps(r) for r in _rows(DATA)] * 5)
    tokenizer = load_tokenizer(checkpoint)
    model = tiny_model(seed=3, tokenizer=tokenizer)
    model.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    for key in ("mask_token_id", "eos_token_id"):
        config.pop(key)
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "SHA256SUMS").unlink()  # a foreign checkpoint: no dmax records
    tasks = json.dumps([TASKS[0], {"name": "humaneval", "limit": 1}])
    cfg = load_config("smoke", [f"run_dir={tmp_path / 'run'}", f"model.base_path={checkpoint}",
                                "evaluate.models=[base]", "evaluate.decoders=[threshold, spd]",
                                "evaluate.thresholds=[0.5]", f"evaluate.tasks={tasks}", "evaluate.gen_length=32"])
    result = run_stage("evaluate", cfg)
    cells = result.evaluation.cells
    assert {(c.task, c.decoder) for c in cells} >= {("gsm8k", "threshold"), ("humaneval", "spd")}
    assert all(c.n == (3 if c.task == "gsm8k" else 1) for c in cells if c.task != cfg.task.name)
    rows = [json.loads(line) for line in (cfg.run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert {r.get("task") for r in rows} >= {"gsm8k", "humaneval"}
    bad = tmp_path / "bad"
    llada2_like_tokenizer_dir(bad, ["x y z"] * 5)
    model.save_pretrained(bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "mask_token_id": config["mask_token_id"] + 1}))
    (bad / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match=r"mask_token_id=.* but the tokenizer's mask token is id"):
        run_stage("evaluate", load_config("smoke", [f"run_dir={tmp_path / 'run2'}", f"model.base_path={bad}",
                                                    "evaluate.models=[base]", f"evaluate.tasks={tasks}"]))


def _rows(directory: Path) -> list[dict]:
    return [json.loads(line) for file in directory.rglob("*.jsonl") for line in file.read_text().splitlines()]


def test_released_trajectories_import_with_their_digest(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    source = tmp_path / "released" / "data"
    source.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), source / "train-00000-of-00001.parquet")
    cfg = load_config("smoke", [f"run_dir={tmp_path / 'run'}", f"distill.trajectories={tmp_path / 'released'}",
                                "distill.n_prompts=4"])
    result = run_stage("distill", cfg)
    data = load_trajectories(cfg.run_dir / "trajectories")
    assert data.pairs == [(r["question"], r["answer"]) for r in rows[:4]]
    assert result.tags["dmax.dataset_digest"] == data.digest
    manifest = read_manifest(cfg.run_dir / "trajectories")
    assert manifest["imported_from"] == str(tmp_path / "released") and len(manifest["source_digest"]) == 64


def test_real_model_presets_resolve_without_weights(capsys):
    for preset in ("llada2-mini", "llada2-mini-code"):
        cfg = load_config(preset)
        assert cfg.model.dtype == "bfloat16" and cfg.evaluate.gen_length == 2048 and cfg.block_length == 32
        assert {0.5, 0.65} <= set(cfg.evaluate.thresholds)
    assert [t.name for t in load_config("llada2-mini").evaluate.tasks] == ["gsm8k", "math500"]
    assert [t.name for t in load_config("llada2-mini-code").evaluate.tasks] == ["humaneval", "mbpp"]
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "--preset", "llada2-mini"])
    assert exit_info.value.code == 0 and "base_path: models/LLaDA2.0-mini" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    cfg = load_config("smoke", [f"run_dir={tmp_path_factory.mktemp('bench') / 'run'}",
                                f"evaluate.tasks={json.dumps(TASKS)}", "evaluate.samples_to_keep=100"])
    return cfg, run_pipeline(cfg)


def test_pipeline_reports_every_benchmark_on_its_own(benchmark_run):
    cfg, _ = benchmark_run
    evaluation = Evaluation.load(cfg.run_dir / "eval" / "metrics.json")
    sizes = {"gsm8k": 3, "math500": 3, "humaneval": 2, "mbpp": 1}
    for name, n in sizes.items():
        cells = evaluation.select(task=name)
        # the whole grid on the test split, nothing on validation, both scores on every cell
        assert len(cells) == len(cfg.evaluate.models) * len(cfg.evaluate.decoders) * len(cfg.evaluate.thresholds)
        assert all(c.split == "test" and c.n == n and set(c.accuracies) == {"strict"} for c in cells)
        assert f"eval/{name}/test/dmax/spd/thr_0.5/accuracy_strict" in evaluation.metrics()
    # the run's own task keeps its cells, names and headline rule
    own = evaluation.select(task=cfg.task.name)
    assert {c.split for c in own} == {"test", "validation"} and "eval/ledger/test/base/threshold/thr_1/tpf" in \
        evaluation.metrics()
    # every task has its headline (refused here: the smoke model is untrained) and its own plot
    assert set(evaluation.headlines) == {"ledger", *sizes}
    report = (cfg.run_dir / "report" / "report.md").read_text()
    for name in sizes:
        assert f"## {name}\n" in report and f"Test split, {sizes[name]} problems" in report
        assert (cfg.run_dir / "report" / "tasks" / f"tradeoff-{name}.png").read_bytes()[:4] == b"\x89PNG"
    pictures = sorted(p.name for p in (cfg.run_dir / "report").glob("trace-*.png"))
    expected = [f"trace-{name}-{i}.png" for name, n in {"ledger": 6, **sizes}.items()
                for i in range(min(n, cfg.report.trace_samples))]
    assert pictures == sorted(expected) and all(p in report for p in pictures)
    rows = [json.loads(line) for line in (cfg.run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    humaneval = [r for r in rows if r.get("task") == "humaneval"]
    assert humaneval and all(set(r["scores"]) == {"strict"} for r in humaneval)
