"""Config validation and the `dmax` CLI's error behaviour (clear words, exit status 2)."""

import subprocess
import sys

import pytest

from dmax_core.config import load_config
from dmax_core.errors import ConfigError


def test_presets_load_and_inherit():
    tiny, smoke = load_config("tiny"), load_config("smoke")
    assert tiny.preset == "tiny" and smoke.preset == "smoke"
    assert smoke.block_length == tiny.block_length  # inherited from `base: tiny`
    assert smoke.model.hidden_size < tiny.model.hidden_size


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
