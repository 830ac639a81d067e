"""The FSDP dry run of benchmarks/train_memory.py on the real LLaDA2.0-mini config: every parameter sharded,
one unit per decoder layer plus the root, counts equal to the unsharded model's, memory = the stated formula."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_memory.py"


def test_fsdp_plan_of_the_real_config_on_the_meta_device():
    spec = importlib.util.spec_from_file_location("train_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = LLaDA2MoeConfig.from_json_file(module.DEFAULT_CONFIG)
    plan = module.fsdp_plan(config)
    with torch.device("meta"):
        plain = LLaDA2MoeForDiffusionLM(config)
    layers = [sum(p.numel() for p in layer.parameters()) for layer in plain.model.layers]
    assert plan["total"] == sum(p.numel() for p in plain.parameters())
    assert 16.0e9 < plan["total"] < 16.5e9  # "16B": LLaDA2.0-mini
    assert plan["units"] == config.num_hidden_layers + 1 and plan["largest_layer"] == max(layers)
    eight = module.memory_per_gpu(plan, config, 8, 2048, offload=False)
    assert abs(eight["params"] + eight["grads"] + eight["adam"] - 16 * plan["total"] / 8 / 1024**3) < 1e-6
    assert module.memory_per_gpu(plan, config, 8, 2048, offload=True)["adam"] == 0.0
