"""dmax's decoders as an lm-evaluation-harness model (`dmax_core.integrations.lm_eval`), offline.

The CLI run goes through `dmax lm-eval` (lm-eval's own CLI with the dmax
model registered) on the tiny trained checkpoint and the local task `tests/assets/lm_eval_tasks/dmax_ledger`;
its texts are checked against an independent path (the frame called here, one prompt at a time), so
lm-eval's prompt building, the chat template, batching and the text clean-up are all covered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance

from dmax_core.bundle import load_bundle
from dmax_core.decoding import build_policy, generate_batch
from dmax_core.errors import ConfigError, DataError, DmaxError
from dmax_core.integrations.lm_eval import DmaxLM, LoglikelihoodUnsupported
from dmax_core.tokenizer import encode, render_prompt

REPO = Path(__file__).resolve().parent.parent
ASSET = REPO / "models" / "ledger-base"
TASKS = REPO / "tests" / "assets" / "lm_eval_tasks"
QUESTIONS = [json.loads(line)["question"] for line in
             (TASKS / "dmax_ledger" / "ledger_test.jsonl").read_text(encoding="utf-8").splitlines()]
GEN, BLOCK, THRESHOLD = 48, 32, 0.5
MODEL_ARGS = f"pretrained={ASSET},decoder=spd,threshold={THRESHOLD},gen_length={GEN},block_length={BLOCK},threads=1"


def offline_env(tmp: Path) -> dict[str, str]:
    """The test's environment for lm-eval: offline, datasets cache in tmp, one thread."""
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp / "hf-datasets"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def lm_eval_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From the repository root: the task's relative data_files path resolves against the working directory.
    # `dmax lm-eval` is what users type (python -m dmax_core = the `dmax` command).
    return subprocess.run([sys.executable, "-m", "dmax_core", "lm-eval", *args], cwd=REPO,
                          env=offline_env(tmp), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One lm-eval run: 4 ledger questions, chat template applied by lm-eval, 4 rows decoded at once."""
    tmp = tmp_path_factory.mktemp("lm_eval")
    out = tmp / "out"
    done = lm_eval_cli(tmp, "--model", "dmax", "--model_args", MODEL_ARGS, "--tasks", "dmax_ledger",
                       "--include_path", str(TASKS), "--limit", "4", "--batch_size", "4", "--apply_chat_template",
                       "--output_path", str(out), "--log_samples")
    assert done.returncode == 0, done.stderr[-4000:]
    (results_file,) = out.rglob("results_*.json")
    (samples_file,) = out.rglob("samples_dmax_ledger_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
    return done, json.loads(results_file.read_text(encoding="utf-8")), samples


@pytest.fixture(scope="module")
def tiny():
    return load_bundle(ASSET)  # the checkpoint's own dtype, as the dmax model's default dtype=auto keeps it


@pytest.fixture(scope="module")
def lm():
    return DmaxLM(pretrained=str(ASSET), decoder="spd", threshold=THRESHOLD, gen_length=GEN, block_length=BLOCK,
                  batch_size=2, device="cpu", threads=1)


def direct_text(tiny, prompt_text: str) -> str:
    """The independent path: the frame on one prompt, decoded the way dmax's evaluation runner does."""
    model, tokenizer = tiny
    prompt = torch.tensor(encode(tokenizer, prompt_text), dtype=torch.long)
    (result,) = generate_batch(model, [prompt], [build_policy("spd", THRESHOLD)], gen_length=GEN, block_length=BLOCK)
    return tokenizer.decode(result.generated_ids.tolist(), skip_special_tokens=True)


def request(context: str, index: int, **gen_kwargs) -> Instance:
    return Instance("generate_until", doc={}, arguments=(context, gen_kwargs), idx=0,
                    metadata=("dmax_ledger", index, 1))


# ------------------------------------------------------------------------------------------- CLI
def test_cli_reports_exact_match_and_dmax_speed(cli_run):
    done, results, samples = cli_run
    task = results["results"]["dmax_ledger"]
    assert 0.0 <= task["exact_match,none"] <= 1.0
    assert len(samples) == 4
    speed = results["config"]["dmax_speed"]
    overall = speed["overall"]
    assert overall["n"] == 4 and speed["tasks"]["dmax_ledger"]["n"] == 4
    assert overall["nfe"] >= 2 and overall["tpf"] > 1.0  # SPD at 0.5 commits several tokens per forward
    assert overall["tpf_total"] == pytest.approx(overall["tokens"] / overall["nfe"])
    assert overall["throughput"] > 0 and overall["tps"] > 0
    assert results["config"]["dmax_decoding"]["policy"] == "spd"
    assert results["config"]["dmax_decoding"]["batch_size"] == 4
    assert "dmax speed over 4 request(s), spd@0.5: TPF" in done.stderr  # logged beside lm-eval's table


def test_cli_texts_equal_direct_decoding(cli_run, tiny):
    """lm-eval's prompt (through `apply_chat_template`) is dmax's `render_prompt`, and each text, decoded 4 rows
    at a time inside lm-eval, equals the frame's batch-of-one decode of that prompt."""
    _, _, samples = cli_run
    tokenizer = tiny[1]
    for sample in samples:
        context = sample["arguments"]["gen_args_0"]["arg_0"]
        assert context == render_prompt(tokenizer, sample["doc"]["question"])
        text = sample["resps"][0][0]
        assert text and text == direct_text(tiny, context)


def test_cli_bad_model_arg_is_one_line(tmp_path):
    done = lm_eval_cli(tmp_path, "--model", "dmax", "--model_args", f"pretrained={ASSET},decoder=nope,threshold=0.5",
                       "--tasks", "dmax_ledger", "--include_path", str(TASKS), "--limit", "1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dmax lm-eval: error: dmax model_args: decoder=nope: unknown decoding policy 'nope'")


# ------------------------------------------------------------------------------------ in process
def test_context_is_sent_as_is_and_cut_at_until(lm, tiny):
    """Without the chat template lm-eval's context is the prompt, unchanged; `until` cuts the text."""
    contexts = [render_prompt(tiny[1], q) for q in QUESTIONS[4:7]]
    before = len(lm.records)
    texts = lm.generate_until([request(c, i, until=["<|role_end|>"]) for i, c in enumerate(contexts)],
                              disable_tqdm=True)
    assert texts == [direct_text(tiny, c) for c in contexts]
    cut = lm.generate_until([request(contexts[0], 0, until=[" ="])], disable_tqdm=True)
    assert cut == [texts[0][: texts[0].index(" =")]]
    new = lm.records[before:]
    assert len(new) == 4 and all(r["task"] == "dmax_ledger" and r["nfe"] >= 1 for r in new)
    info = lm.get_model_info()
    assert info["dmax_speed"]["overall"]["n"] == len(lm.records)


def test_max_gen_toks_caps_the_generation_to_whole_blocks(lm, tiny):
    """max_gen_toks=5 asks for one block (32 < gen_length 48); the frame lays out whole absolute blocks after
    the prompt, so the positions generated are those up to the block boundary at or after P + 32."""
    context = render_prompt(tiny[1], QUESTIONS[0])
    prompt_length = len(encode(tiny[1], context))
    before = len(lm.records)
    lm.generate_until([request(context, 0, until=[], max_gen_toks=5)], disable_tqdm=True)
    assert lm.records[before]["tokens"] <= -(-(prompt_length + BLOCK) // BLOCK) * BLOCK - prompt_length
    assert lm._plan(request(context, 0, max_gen_toks=5))["gen_length"] == BLOCK
    assert lm._plan(request(context, 0, max_gen_toks=1000))["gen_length"] == GEN


@pytest.mark.parametrize("method", ["loglikelihood", "loglikelihood_rolling"])
def test_loglikelihood_requests_raise_a_clear_error(lm, method):
    args = ("Tom has", " 1") if method == "loglikelihood" else ("Tom has 1 .",)
    with pytest.raises(NotImplementedError, match="no left-to-right log-likelihood") as caught:
        getattr(lm, method)([Instance(method, doc={}, arguments=args, idx=0)])
    assert isinstance(caught.value, LoglikelihoodUnsupported) and isinstance(caught.value, DmaxError)
    assert "generate_until" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("args", "error", "message"), [
    ("decoder=spd,threshold=0.5", ConfigError, "needs pretrained=<checkpoint directory>"),
    (f"pretrained={ASSET},decoder=nope,threshold=0.5", ConfigError, "unknown decoding policy 'nope'; known: "),
    (f"pretrained={ASSET},decoder=spd", ConfigError, "threshold=<number> is required"),
    (f"pretrained={ASSET},threshold=0.5,gen_lenght=64", ConfigError,
     "unknown argument(s) gen_lenght: not a dmax model argument"),
    (f"pretrained={ASSET},decoder=threshold,threshold=0.5,confidence_stop=0.8", ConfigError,
     "nor a knob of the threshold decoder"),
    (f"pretrained={ASSET},threshold=1.5", ConfigError, "threshold"),
    (f"pretrained={ASSET},threshold=0.5,block_length=0", ConfigError,
     "block_length=0: Input should be greater than or equal to 1"),
    (f"pretrained={ASSET},threshold=0.5,dtype=float8", ConfigError,
     "dtype=float8: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    (f"pretrained={ASSET},threshold=0.5,compile=maybe", ConfigError, "compile=maybe: Input should be a valid boolean"),
    (f"pretrained={ASSET},threshold=0.5,gen_length=x", ConfigError, "gen_length=x: Input should be a valid integer"),
    ("pretrained=/no/such/checkpoint,threshold=0.5", DataError, "checkpoint directory not found"),
])
def test_bad_model_args_fail_in_one_line(args, error, message):
    """Through lm-eval's own argument parsing (`create_from_arg_string`), before any weights are read."""
    with pytest.raises(error) as caught:
        DmaxLM.create_from_arg_string(args, {"batch_size": 1, "device": "cpu"})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_registration_keeps_lm_eval_models_and_dmax_import_light():
    from lm_eval.api.registry import get_model, model_registry

    assert get_model("dmax") is DmaxLM
    assert "hf" in model_registry  # lm-eval's own models are still registered beside dmax
    probe = "import sys, dmax_core, dmax_core.integrations; assert 'lm_eval' not in sys.modules, 'lm_eval imported'"
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, timeout=120)
