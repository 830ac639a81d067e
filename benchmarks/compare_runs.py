"""Do two run directories hold the same results? For checking that a refactor changed nothing.

    python benchmarks/compare_runs.py RUN_A RUN_B      # e.g. runs/tiny of two checkouts, same machine

Compares, exactly (no tolerance): the tensors of `base/` and `dmax/` (by name, dtype and bytes; file
hashes would also compare metadata), the trajectory table (every column), every evaluation cell's
accuracy, TPF, NFE, tokens and n, and the headline (validity, compared cells, ratio, accuracy change).
Timing figures (TPS, seconds) differ from run to run and are not compared. Older runs named the cell
figures `tpf_mean`, `nfe_mean`, `tokens_mean`, and left the run's own task unnamed; both are read.
Prints one line per comparison and a final JSON line; exit status 1 if anything differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from safetensors.torch import load_file

FIGURES = {"accuracy": "accuracy", "tpf": "tpf_mean", "nfe": "nfe_mean", "tokens": "tokens_mean", "n": "n"}


def tensors_equal(a: Path, b: Path) -> tuple[bool, str]:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if set(left) != set(right):
        return False, f"tensor names differ: {sorted(set(left) ^ set(right))[:5]}"
    different = [n for n in left if left[n].dtype != right[n].dtype or not left[n].equal(right[n])]
    return not different, f"{len(left)} tensors, {len(different)} differ {different[:3]}"


def cells(run: Path) -> dict[tuple, dict[str, float]]:
    """(task, model, decoder, threshold, split) -> figures. Older runs left the run's own task unnamed
    (`task` absent): it is the first task of their settings."""
    data = json.loads((run / "eval" / "metrics.json").read_text())
    own = next(iter(data.get("settings", {}).get("tasks", {})), None)
    out = {}
    for c in data["cells"]:
        key = (c.get("task") or own, c["model"], c["decoder"], c["threshold"], c["split"])
        out[key] = {name: c[name] if name in c else c[old] for name, old in FIGURES.items()}
    return out


def headline(run: Path) -> dict[str, object]:
    """The run's headline: validity, the two compared cells (by threshold) and the ratio and delta."""
    data = json.loads((run / "eval" / "metrics.json").read_text())["headline"]
    method = data.get("method", data.get("dmax"))
    return {"valid": data["valid"], "tpf_ratio": data.get("tpf_ratio"),
            "accuracy_delta_pp": data.get("accuracy_delta_pp"),
            "baseline": data["baseline"] and (data["baseline"]["model"], data["baseline"]["threshold"]),
            "method": method and (method["model"], method["threshold"])}


def main() -> int:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    results: dict[str, bool] = {}
    for model in ("base", "dmax"):
        same, detail = tensors_equal(a / model, b / model)
        results[f"{model}_weights"] = same
        print(f"{model} weights: {'same' if same else 'DIFFERENT'} ({detail})")
    ta = pq.read_table(a / "trajectories" / "trajectories.parquet")
    tb = pq.read_table(b / "trajectories" / "trajectories.parquet")
    results["trajectories"] = ta.equals(tb)
    print(f"trajectories: {'same' if results['trajectories'] else 'DIFFERENT'} ({ta.num_rows} rows)")
    ca, cb = cells(a), cells(b)
    different = [k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)]
    results["cells"] = not different
    print(f"evaluation cells: {len(ca)} vs {len(cb)}, {len(different)} differ {sorted(different, key=str)[:3]}")
    for key in sorted(different, key=str)[:5]:
        print(f"  {key}: {ca.get(key)} vs {cb.get(key)}")
    ha, hb = headline(a), headline(b)
    results["headline"] = ha == hb
    print(f"headline: {'same' if ha == hb else 'DIFFERENT'} ({ha}{'' if ha == hb else f' vs {hb}'})")
    print(json.dumps({"run_a": str(a), "run_b": str(b), "same": results}))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
