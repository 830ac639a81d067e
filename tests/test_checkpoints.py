"""Checkpoints you can trust: every malformed part of a checkpoint (weights, config, tokenizer, records)
is refused by the `dmax` command with exit status 2 and one line naming the file, never a traceback or a
silently wrong model. The subject is a copy of the trained test asset, damaged one way per case."""

import json
import shutil
from pathlib import Path

import pytest

from dmax_core import cli

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


def flip_payload_byte(directory: Path) -> str:
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-64] ^= 0x01  # one bit of a tensor value; the header stays valid
    path.write_bytes(bytes(data))
    return "model.safetensors"


def truncate_weights(directory: Path) -> str:
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    return "model.safetensors"


def garbage(name: str):
    def damage(directory: Path) -> str:
        (directory / name).write_bytes(b"\x00\xffnot what this file should hold{")
        return name

    return damage


def wrong_config_value(directory: Path) -> str:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["partial_rotary_factor"] = "half"
    path.write_text(json.dumps(config))
    return "config.json"


def missing_weights(directory: Path) -> str:
    (directory / "model.safetensors").unlink()
    return "model.safetensors"


def run_dmax(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    return exit_info.value.code, capsys.readouterr().err


DAMAGES = [flip_payload_byte, truncate_weights, missing_weights, wrong_config_value] + [
    pytest.param(garbage(name), id=f"garbage-{name}")
    for name in ("tokenizer.json", "config.json", "dmax_bundle.json", "SHA256SUMS", "tokenizer_config.json")
]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_in_one_line(damage, tmp_path, capsys):
    checkpoint = tmp_path / "base"
    shutil.copytree(ASSET, checkpoint)
    name = damage(checkpoint)
    code, err = run_dmax(["distill", "--preset", "smoke", f"model.base_path={checkpoint}",
                          f"run_dir={tmp_path / 'run'}", "distill.n_prompts=1"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmax: error: "), err
    assert str(checkpoint / name) in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "trajectories").exists()  # nothing written from a bad checkpoint


def test_a_truncated_foreign_checkpoint_is_refused_by_safetensors_itself(tmp_path, capsys):
    """Without SHA256SUMS the checksum cannot catch a truncated copy; the safetensors reader does."""
    checkpoint = tmp_path / "base"
    shutil.copytree(ASSET, checkpoint)
    (checkpoint / "SHA256SUMS").unlink()
    truncate_weights(checkpoint)
    code, err = run_dmax(["distill", "--preset", "smoke", f"model.base_path={checkpoint}",
                          f"run_dir={tmp_path / 'run'}", "distill.n_prompts=1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot read {checkpoint / 'model.safetensors'} as safetensors (truncated or corrupt?)" in err


def test_a_foreign_checkpoint_without_records_still_loads(tmp_path, capsys):
    """HF checkpoints from elsewhere carry neither SHA256SUMS nor dmax_bundle.json."""
    checkpoint = tmp_path / "base"
    shutil.copytree(ASSET, checkpoint)
    (checkpoint / "SHA256SUMS").unlink()
    (checkpoint / "dmax_bundle.json").unlink()
    code, err = run_dmax(["distill", "--preset", "smoke", f"model.base_path={checkpoint}",
                          f"run_dir={tmp_path / 'run'}", "distill.n_prompts=1"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "trajectories" / "trajectories.parquet").is_file()
