"""Config validation and the `dmax` CLI's error behaviour (clear words, exit status 2)."""

import subprocess
import sys

import pytest
import yaml

from dmax_core.config import DmaxConfig, load_config
from dmax_core.errors import ConfigError


def test_presets_load_and_inherit():
    tiny, scratch, smoke, default = (load_config("tiny"), load_config("tiny-scratch"), load_config("smoke"),
                                     DmaxConfig())
    assert tiny.preset == "tiny" and smoke.preset == "smoke"
    # smoke -> tiny-scratch -> ledger: values only `ledger` sets (and that differ from the defaults) reach
    # smoke, values `tiny-scratch` changes win over ledger's, and smoke's own win over both.
    assert default.task.name == "running_total" and smoke.task.name == scratch.task.name == "ledger"
    assert default.pretrain.lr != 1.5e-3 and smoke.pretrain.lr == scratch.pretrain.lr == 1.5e-3
    assert scratch.pretrain.steps == 2000 and load_config("ledger").pretrain.steps == 3000
    assert smoke.pretrain.steps == 12 and smoke.model.hidden_size == 32 < scratch.model.hidden_size
    # The embedded default starts from the shipped base, like a real run from a downloaded checkpoint; the
    # scratch preset and smoke train their own.
    assert str(tiny.model.base_path) == "models/ledger-base" and tiny.model.dtype == "float32"
    assert scratch.model.base_path is None and smoke.model.base_path is None
    assert tiny.train == scratch.train and tiny.distill == scratch.distill and tiny.evaluate == scratch.evaluate


def test_base_chains_resolve_by_path_and_loops_are_refused(tmp_path):
    (tmp_path / "parent.yaml").write_text("seed: 7\ntrain: {lr: 2.0e-4}\n")
    (tmp_path / "child.yaml").write_text(f"base: {tmp_path / 'parent.yaml'}\ntrain: {{steps: 5}}\n")
    child = load_config(tmp_path / "child.yaml")
    assert (child.seed, child.train.lr, child.train.steps, child.preset) == (7, 2.0e-4, 5, "child")
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="inheritance loop"):
        load_config(tmp_path / "a.yaml")


def test_policy_and_task_knobs_come_from_their_registries(tmp_path):
    cfg = load_config("smoke", ["decoding.spd.confidence_stop=0.8", "decoding.spd.max_steps=16"])
    assert cfg.decoding.knobs("spd") == {"confidence_stop": 0.8, "max_steps": 16}
    assert cfg.decoding.knobs("threshold") == {}
    assert load_config("smoke").decoding.knobs("spd") == {"confidence_stop": 0.9, "max_steps": None}
    assert cfg.task.knobs == {"n_train": 200, "n_validation": 4, "n_test": 6, "min_steps": 3, "max_steps": 4,
                              "seed": 1234}
    assert yaml.safe_load(cfg.to_yaml())["decoding"]["spd"] == {"confidence_stop": 0.8, "max_steps": 16}
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(cfg.to_yaml())
    assert load_config(resolved) == cfg  # a resolved config reads back as itself


def test_the_frame_cap_is_checked_against_the_policies_when_the_config_is_read():
    assert load_config("smoke", ["decoding.spd.max_steps=40"]).decoding.max_forwards_per_block is None
    load_config("smoke", ["decoding.max_forwards_per_block=40", "decoding.spd.max_steps=40"])
    with pytest.raises(ConfigError, match=r"max_forwards_per_block=32 is below the 40 forwards .* 'spd'"):
        load_config("smoke", ["decoding.max_forwards_per_block=32", "decoding.spd.max_steps=40"])
    with pytest.raises(ConfigError, match="below the 32 forwards per block that decoding policy 'threshold'"):
        load_config("smoke", ["decoding.max_forwards_per_block=16"])
    assert load_config("smoke", ["evaluate.decoders=[spd]"]).evaluate.decoders == ["spd"]


def test_overrides_are_typed():
    cfg = load_config("smoke", ["train.lr=3e-4", "evaluate.thresholds=[1.0, 0.5]", "seed=7"])
    assert cfg.train.lr == 3e-4 and cfg.evaluate.thresholds == [1.0, 0.5] and cfg.seed == 7
    flat = cfg.to_flat_dict()
    assert flat["train.lr"] == 3e-4 and flat["model.hidden_size"] == cfg.model.hidden_size


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("trian.lr=1", "unknown config key 'trian.lr'"),
        ("train.lr=-1", "train.lr"),
        ("evaluate.thresholds=[1.5]", "thresholds"),
        ("train.min_lr=1.0", "min_lr"),
        ("task.min_steps=9", "min_steps"),
        ("novalue", "key=value"),
        ("decoding.spd.confidence_stop=1.5", "decoding policy 'spd': confidence_stop must be a number in"),
        ("decoding.spd.threshold=0.5", "unknown config key 'decoding.spd.threshold'"),
        ("decoding.beam.width=4", "unknown config key 'decoding.beam.width'"),
        ("evaluate.decoders=[spd, beam]", "unknown decoding policy 'beam'; known: "),
        ("distill.decoder=beam", "unknown decoding policy 'beam'"),
        ("task.name=squad", "unknown task 'squad'; known: gsm8k, humaneval, running_total, ledger"),
        ("task.name=gsm8k", r"task 'gsm8k' has no knob\(s\) max_steps, min_steps, n_test, n_train, n_validation"),
        ("task.people=4", "unknown config key 'task.people'"),
        ("evaluate.models=[base, teacher]", "unknown model"),
        ("decoding.max_forwards_per_block=0", "max_forwards_per_block"),
    ],
)
def test_bad_overrides_name_the_problem(override, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        load_config("smoke", [override])


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("train:\n  steps: 3\n  lernrate: 1\n")
    with pytest.raises(ConfigError, match="lernrate"):
        load_config(extra)


def test_cli_reports_errors_in_words_with_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dmax_core", "train", "--preset", "smoke", f"run_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "trajectory file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dmax_core", "config", "--preset", "smoke", "x.y=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown config key" in proc.stderr
