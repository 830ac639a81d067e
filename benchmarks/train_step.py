"""Seconds per training step: the full 2n-token layout of spec §1.2 against the trimmed one.

    python benchmarks/train_step.py                         # tiny preset, batch 32, n = 96
    python benchmarks/train_step.py pretrain.max_seq_len=64 task.max_steps=3

Both layouts give the same loss and gradients (tests/test_training.py checks it); the trimmed one drops
the noisy blocks without labels and the clean blocks no labelled query reads (diffusion.training_layout).
Builds a real batch of the preset's task, runs a few warm-up steps, then times forward + backward +
AdamW. Prints one line per layout and a final JSON line. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from dmax_core.config import load_config
from dmax_core.diffusion import add_noise, labelled_block_span, sample_mask_ratios, training_layout
from dmax_core.env import device_name
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.objectives import training_loss
from dmax_core.stages.common import model_config, task_splits, task_tokenizer
from dmax_core.training import encode_conversations

WARMUP, TIMED = 3, 10


def main() -> None:
    cfg = load_config("tiny", sys.argv[1:])
    torch.manual_seed(0)
    torch.set_num_threads(cfg.threads.train or torch.get_num_threads())
    tokenizer = task_tokenizer(cfg)
    problems = task_splits(cfg)["train"][: cfg.pretrain.batch_size]
    n, block = cfg.pretrain.max_seq_len, cfg.block_length
    data = encode_conversations(tokenizer, [(p.question, p.answer) for p in problems], n, block)
    model = LLaDA2MoeForDiffusionLM(model_config(cfg, tokenizer))
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ratios = sample_mask_ratios(len(data), cfg.pretrain.noise_low, cfg.pretrain.noise_high, generator)
    noisy = add_noise(data.clean_ids, data.prompt_lengths, ratios, model.mask_token_id, generator)
    span = labelled_block_span(data.labels, block)
    results = {"device": device_name(), "threads": torch.get_num_threads(), "n": n, "batch": len(data),
               "labelled_block_span": span}
    for name, layout in (("full", training_layout(n, block)), ("trimmed", training_layout(n, block, span))):
        times = []
        for step in range(WARMUP + TIMED):
            started = time.perf_counter()
            loss = training_loss(model, noisy, data.clean_ids, data.labels, layout)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= WARMUP:
                times.append(time.perf_counter() - started)
        tokens = layout.attention_mask.shape[0]
        results[name] = {"tokens_per_sequence": tokens, "seconds_per_step": statistics.median(times)}
        print(f"{name:8s} {tokens:4d} tokens/sequence  {statistics.median(times):.3f} s/step (median of {TIMED})")
    results["speedup"] = results["full"]["seconds_per_step"] / results["trimmed"]["seconds_per_step"]
    print(f"speed-up {results['speedup']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
