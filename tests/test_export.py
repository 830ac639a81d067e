"""`dmax export`: a hub-ready folder from a checkpoint directory or a registered MLflow model version.

The run is real and small: the committed trained asset (models/ledger-base) as the run's `base/` and,
copied, as its `dmax/`, measured by the real `evaluate` stage on four ledger problems with fixed thresholds
(so the headline names a cell for each model). Every number the card or generation config shows is checked
against that run's eval/metrics.json read here as plain JSON, not through the exporter's helpers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dmax_core import cli
from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.diffusion import block_causal_mask
from dmax_core.errors import ConfigError, DataError
from dmax_core.export import export_checkpoint, parse_size
from dmax_core.files import checksums_digest, read_checksums, verify_checksums
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.stages.runner import run_stage

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"
TRAIN_PROVENANCE = {"stage": "train", "objective": "oput", "steps": 7, "final_loss": 0.25, "examples": 11,
                    "dataset_digest": "d" * 64, "preset": "export-test"}


def _run_inputs(run_dir: Path) -> None:
    """`base/` is the asset; `dmax/` the same weights under the provenance `train` writes."""
    shutil.copytree(ASSET, run_dir / "base")
    shutil.copytree(ASSET, run_dir / "dmax")
    (run_dir / "dmax" / "dmax_bundle.json").write_text(json.dumps(TRAIN_PROVENANCE))


def _config(run_dir: Path, preset: str = "export-test"):
    # Fixed thresholds and no base-accuracy gate: the headline names a cell of each model on 4 problems.
    return load_config("tiny", [f"run_dir={run_dir}", f"preset={preset}", "evaluate.thresholds=[1.0,0.7]",
                                "evaluate.n_test=4", "evaluate.gen_length=48", "evaluate.samples_to_keep=0",
                                "experiment.baseline={model: base, decoder: threshold, threshold: 0.7}",
                                "experiment.method={model: dmax, decoder: spd, threshold: 0.5}",
                                "experiment.min_base_accuracy=null"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    _run_inputs(run_dir)
    run_stage("evaluate", _config(run_dir))
    return run_dir


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / "metrics.json").read_text())


def _state(directory: Path) -> dict[str, torch.Tensor]:
    model, _ = load_bundle(directory)
    return model.state_dict()


def _logits(model: LLaDA2MoeForDiffusionLM) -> torch.Tensor:
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
    positions = torch.arange(ids.shape[1])
    with torch.no_grad():
        return model(ids, position_ids=positions, attention_mask=block_causal_mask(positions, 32))


def _table(card: str) -> list[dict[str, str]]:
    lines = [line for line in card.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


def _front_matter(card: str) -> str:
    assert card.startswith("---\n")
    return card.split("---\n")[1]


# ------------------------------------------------------------------------------ round trip
def test_export_round_trips_weights_dtype_and_logits(run_dir, tmp_path):
    out = export_checkpoint(run_dir / "dmax", tmp_path / "hub", max_shard_size="200KB")
    source, _ = load_bundle(run_dir / "dmax")
    exported, tokenizer = load_bundle(out)
    direct = LLaDA2MoeForDiffusionLM.from_pretrained(out)
    want, got = source.state_dict(), exported.state_dict()
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype == torch.bfloat16, name  # kept as stored
        assert torch.equal(got[name], want[name]), name
    assert torch.equal(_logits(exported), _logits(source))
    assert torch.equal(_logits(direct), _logits(source))
    assert tokenizer.chat_template and (out / "chat_template.jinja").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llada2_moe"
    assert json.loads((out / "dmax_bundle.json").read_text()) == TRAIN_PROVENANCE
    assert not (out / "model.safetensors").exists()


def test_an_export_loads_through_transformers_auto_classes_and_the_diffusers_pipeline(run_dir, tmp_path):
    """The hub folder as an HF user takes it: AutoModelForCausalLM (no remote code) gives the source's logits,
    and LLaDA2Pipeline decodes it with the tokens of dmax's threshold decoder on the source."""
    from transformers import AutoModelForCausalLM

    from dmax_core.decoding import ThresholdPolicy, generate
    from dmax_core.integrations.diffusers import load_pipeline
    from dmax_core.tokenizer import encode

    out = export_checkpoint(run_dir / "dmax", tmp_path / "hub", max_shard_size="200KB")
    source, tokenizer = load_bundle(run_dir / "dmax")
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert hf.block_length == 32 and hf.dtype == torch.bfloat16
    ids = torch.randint(0, source.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, _logits(source))
    pipe = load_pipeline(out, dtype="float32")
    prompt = torch.tensor(encode(tokenizer, tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 3 and buys 2 . How many now ?"}], tokenize=False,
        add_generation_prompt=True)))
    ours = generate(source.float(), prompt, ThresholdPolicy(0.9), gen_length=48, block_length=32)
    theirs = pipe(input_ids=prompt[None], gen_length=48, threshold=0.9, editing_threshold=None,
                  sampling_method="greedy", output_type="seq").sequences[0].tolist()
    expected = ours.raw_ids[len(prompt) : len(prompt) + 48].tolist()
    eos = tokenizer.eos_token_id
    assert theirs[: theirs.index(eos) + 1] == expected[: expected.index(eos) + 1]


def test_shards_follow_the_size_limit_and_the_index_is_valid(run_dir, tmp_path):
    limit = parse_size("200KB")
    out = export_checkpoint(run_dir / "dmax", tmp_path / "hub", max_shard_size="200KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(p.name for p in out.glob("model-*-of-*.safetensors")) == shards
    state = _state(run_dir / "dmax")
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    assert set(index["weight_map"]) == set(state)
    for shard in shards:
        with safe_open(str(out / shard), framework="pt") as handle:
            names = set(handle.keys())
            sizes = [handle.get_tensor(n).numel() * handle.get_tensor(n).element_size() for n in names]
        assert names == {n for n, s in index["weight_map"].items() if s == shard}
        assert sum(sizes) <= limit or len(names) == 1  # a tensor larger than the limit gets its own shard
    assert set(read_checksums(out)) == set(shards)  # SHA256SUMS over the shards: the loader verifies them
    assert verify_checksums(out)
    one = export_checkpoint(run_dir / "dmax", tmp_path / "one", max_shard_size="2GB")
    assert sorted(p.name for p in one.glob("model-*.safetensors")) == ["model-00001-of-00001.safetensors"]


def test_a_changed_shard_is_refused_on_load(run_dir, tmp_path):
    out = export_checkpoint(run_dir / "dmax", tmp_path / "hub", max_shard_size="500KB")
    shard = sorted(out.glob("model-*-of-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(Exception, match="does not match its SHA-256"):
        load_bundle(out)


def test_parse_size_uses_decimal_units():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("500MB") == 500 * 10**6
    assert parse_size("200KB") == 200_000 and parse_size("1GiB") == 2**30 and parse_size(1234) == 1234
    assert parse_size("1234") == 1234
    for bad in ("lots", "2XB", "0", "-5MB"):
        with pytest.raises(ConfigError, match="shard size"):
            parse_size(bad)


# ------------------------------------------------------------------------------ from the records
def test_generation_config_and_card_come_from_the_runs_records(run_dir, tmp_path):
    out = export_checkpoint(run_dir / "dmax", tmp_path / "hub")
    metrics = _metrics(run_dir)
    settings = metrics["settings"]
    [task] = metrics["headlines"]
    method = metrics["headlines"][task]["method"]
    assert method["model"] == "dmax" and method["decoder"] == "spd"
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["decoder"], generation["threshold"]) == (method["decoder"], method["threshold"])
    assert generation["decoder_knobs"] == settings["decoding"]["spd"]
    assert generation["block_length"] == settings["block_length"]
    assert generation["gen_length"] == generation["max_new_tokens"] == settings["gen_length"]
    config = json.loads((ASSET / "config.json").read_text())
    assert [generation[k] for k in ("mask_token_id", "eos_token_id", "pad_token_id")] == [
        config["mask_token_id"], config["eos_token_id"], config["pad_token_id"]]

    card = (out / "README.md").read_text()
    front = _front_matter(card)
    assert "library_name: dmax" in front and "license" not in front
    assert all(f"- {tag}\n" in front for tag in ("dllm", "diffusion", "dmax", "llada2"))
    assert f"dataset digest: {'d' * 64}" in card and "objective: oput" in card and "steps: 7" in card
    assert checksums_digest(run_dir / "dmax") in card
    assert settings["setting"] in card
    rows = _table(card)
    cells = [c for c in metrics["cells"] if c["model"] == "dmax"]
    assert len(rows) == len(cells) >= 3
    for row, cell in zip(rows, cells, strict=True):
        assert (row["task"], row["split"], row["decoder"]) == (cell["task"], cell["split"], cell["decoder"])
        assert float(row["threshold"]) == cell["threshold"]
        assert float(row["accuracy"].rstrip("%")) == pytest.approx(100 * cell["accuracy"], abs=0.05)
        assert float(row["TPF"]) == pytest.approx(cell["tpf"], abs=0.005)
        assert float(row["TPS"]) == pytest.approx(cell["tps"], abs=0.05)
        assert int(row["n"]) == cell["n"] == 4
        assert row["setting"] == f"batch {cell['batch_size']}, {settings['dtype']}, {settings['device']}"

    base = export_checkpoint(run_dir / "base", tmp_path / "base-hub")  # the baseline arm's cell
    baseline = metrics["headlines"][task]["baseline"]
    generation = json.loads((base / "generation_config.json").read_text())
    assert (generation["decoder"], generation["threshold"]) == ("threshold", baseline["threshold"])
    assert baseline["threshold"] == 0.7
    assert generation["decoder_knobs"] == settings["decoding"]["threshold"]
    assert len(_table((base / "README.md").read_text())) == len([c for c in metrics["cells"] if c["model"] == "base"])


def test_run_dir_and_model_name_can_be_given(run_dir, tmp_path):
    elsewhere = tmp_path / "released" / "DMax-tiny"
    shutil.copytree(run_dir / "dmax", elsewhere)
    plain = export_checkpoint(elsewhere, tmp_path / "plain")  # no run known: no numbers
    assert "no measurements" in (plain / "README.md").read_text()
    given = export_checkpoint(elsewhere, tmp_path / "given", run_dir=run_dir, model="dmax")
    assert _table((given / "README.md").read_text()) == _table(
        (export_checkpoint(run_dir / "dmax", tmp_path / "local") / "README.md").read_text())


def test_a_checkpoint_without_records_gets_a_card_that_says_so(tmp_path):
    out = export_checkpoint(ASSET, tmp_path / "hub")
    card = (out / "README.md").read_text()
    assert "No evaluation records were found" in card and "| task |" not in card
    config = json.loads((ASSET / "config.json").read_text())
    assert json.loads((out / "generation_config.json").read_text()) == {
        k: config[k] for k in ("mask_token_id", "eos_token_id", "pad_token_id")}
    assert "stage: pretrain" in card


# ------------------------------------------------------------------------------ bad input
def _cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.run(["export", *map(str, args)])
    return code, capsys.readouterr().err


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".hub."))


def test_bad_input_is_one_line_exit_2_and_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "hub"
    code, err = _cli(capsys, tmp_path / "missing", out)
    assert code == 2 and err.count("\n") == 1 and "checkpoint directory not found" in err

    corrupt = tmp_path / "corrupt"
    shutil.copytree(ASSET, corrupt)
    with open(corrupt / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    code, err = _cli(capsys, corrupt, out)
    assert code == 2 and err.count("\n") == 1 and "SHA-256" in err
    (corrupt / "SHA256SUMS").unlink()  # a foreign checkpoint: no checksums, the truncation itself is found
    code, err = _cli(capsys, corrupt, out)
    assert code == 2 and err.count("\n") == 1 and "safetensors" in err

    code, err = _cli(capsys, ASSET, out, "--max-shard-size", "big")
    assert code == 2 and "shard size" in err
    code, err = _cli(capsys, "models:/no-slash-version", out)
    assert code == 2 and "not a registered model version" in err
    assert not out.exists() and _leftovers(tmp_path) == []

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _cli(capsys, ASSET, out)
    assert code == 2 and err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, err = _cli(capsys, ASSET, out, "--force")
    assert code == 0 and not (out / "keep.txt").exists() and (out / "README.md").is_file()

    source = tmp_path / "src"
    shutil.copytree(ASSET, source)
    code, err = _cli(capsys, source, source / "inside", "--force")
    assert code == 2 and "must not be the source" in err and not (source / "inside").exists()
    with pytest.raises(SystemExit) as done:
        cli.main(["export", str(tmp_path / "missing"), str(tmp_path / "other")])
    assert done.value.code == 2 and not (tmp_path / "other").exists()


def test_a_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    import dmax_core.export.folder as folder

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(folder, "save_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(ASSET, tmp_path / "hub")
    assert not (tmp_path / "hub").exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ MLflow registry
def test_a_registered_version_exports_with_its_evaluate_runs_records(tmp_path, monkeypatch, capsys):
    """Registered by dmax's own tracking (a train stage run offering `dmax/` as a candidate, then the real
    evaluate stage under the same pipeline run), exported by `models:/<name>/<version>` and `@candidate`."""
    from dmax_core.results import ModelCandidate, StageResult
    from dmax_core.tracking import Tracker, registered_model_name, tracking_client

    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = Tracker(tracking_client(store))
    run_dir = tmp_path / "run"
    _run_inputs(run_dir)
    cfg = _config(run_dir, preset="export-mlflow")
    with tracker.pipeline_run(cfg) as parent:
        with tracker.stage_run(cfg, "train", ("train",), parent_run_id=parent) as run:
            run.record(StageResult("train", outputs={"dmax": run_dir / "dmax"},
                                   candidate=ModelCandidate("dmax", "oput", checksums_digest(run_dir / "dmax"))))
        run_stage("evaluate", cfg, tracker=tracker, parent_run_id=parent)
    name = registered_model_name("export-mlflow", "oput")
    out = export_checkpoint(f"models:/{name}/1", tmp_path / "hub", max_shard_size="500KB", client=tracker.client)

    assert all(torch.equal(a, b) for a, b in zip(_state(out).values(), _state(run_dir / "dmax").values(), strict=True))
    card = (out / "README.md").read_text()
    assert f"registered model: {name} version 1" in card
    metrics = _metrics(run_dir)  # what the evaluate run logged as its eval/ artifact
    cells = [c for c in metrics["cells"] if c["model"] == "dmax"]
    rows = _table(card)
    assert [(r["decoder"], float(r["threshold"]), int(r["n"])) for r in rows] == [
        (c["decoder"], c["threshold"], c["n"]) for c in cells]
    assert [float(r["TPF"]) for r in rows] == pytest.approx([c["tpf"] for c in cells], abs=0.005)
    generation = json.loads((out / "generation_config.json").read_text())
    method = metrics["headlines"][metrics["settings"]["primary_task"]]["method"]
    assert (generation["decoder"], generation["threshold"]) == (method["decoder"], method["threshold"])
    assert generation["dmax_records"]["metrics"].startswith("runs:/")
    assert not list(tmp_path.glob(".hub.*"))  # the download scratch is gone

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    code, err = _cli(capsys, f"models:/{name}@candidate", tmp_path / "by-alias")
    assert code == 0, err
    assert _table((tmp_path / "by-alias" / "README.md").read_text()) == rows
    code, err = _cli(capsys, f"models:/{name}/7", tmp_path / "absent")
    assert code == 2 and err.count("\n") == 1 and "not in the model registry" in err
    assert not (tmp_path / "absent").exists()


def test_a_checkpoint_that_predates_its_recorded_block_length_gets_the_runs(run_dir, tmp_path):
    """Checkpoints written before config.json recorded `block_length` export with the block the run decoded
    them with (its records), so HF callers can build the mask; a contradiction between the two is refused."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "dmax" / "config.json").read_text())
    config.pop("block_length")
    (run / "dmax" / "config.json").write_text(json.dumps(config))
    out = export_checkpoint(run / "dmax", tmp_path / "hub")
    assert json.loads((out / "config.json").read_text())["block_length"] == _metrics(run)["settings"]["block_length"]
    config["block_length"] = 16
    (run / "dmax" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"records block_length=16 but the run's records .* block_length=32"):
        export_checkpoint(run / "dmax", tmp_path / "hub2")
    assert not (tmp_path / "hub2").exists()
