"""The objective registry: SFT and OPUT registered with their checkpoints, a new objective by one class,
each loss term logged beside the total, and configs that cannot mean what they say refused in words."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from builders import tiny_model
from pydantic import ValidationError

from dmax_core.config import TrainConfig, load_config, model_names
from dmax_core.errors import ConfigError
from dmax_core.objectives import OBJECTIVES, Objective, ObjectiveOutput, build_objective, checkpoint_names
from dmax_core.objectives.losses import training_loss
from dmax_core.training import duplicate_for_oput, encode_conversations, train_model


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[int | None, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_params(self, params: dict) -> None:  # pragma: no cover - the trainer logs metrics only
        pass


@pytest.fixture
def two_terms():
    """A throwaway objective registered for one test (one class, nothing else touched), then forgotten."""

    class TwoTerms(Objective):
        """SFT's cross-entropy plus a weighted L2 penalty on the embeddings, as two terms."""

        name: ClassVar[str] = "two_terms_for_tests"
        checkpoint: ClassVar[str] = "two_terms"

        def __init__(self, weight: float = 0.5) -> None:
            if weight < 0:
                raise ValueError(f"weight must be >= 0, got {weight}")
            self.weight = weight

        def loss_terms(self, model, batch):
            ce = training_loss(model, batch.noisy, batch.clean, batch.labels, batch.layout)
            embedding = next(p for n, p in model.named_parameters() if "embed" in n)
            return ObjectiveOutput({"ce": ce, "l2": self.weight * embedding.pow(2).mean()},
                                   stats={"weight": self.weight})

    yield TwoTerms
    OBJECTIVES._classes.pop(TwoTerms.name)


def test_sft_and_oput_are_registered_with_the_checkpoints_the_run_layout_uses():
    assert {"sft", "oput"} <= set(OBJECTIVES.names())
    assert checkpoint_names()["sft"] == "control" and checkpoint_names()["oput"] == "dmax"
    assert {"base", "control", "dmax"} <= set(model_names())
    assert OBJECTIVES.get("sft").from_scratch and not OBJECTIVES.get("oput").from_scratch


def test_a_bad_knob_or_name_is_refused_in_words(two_terms):
    with pytest.raises(ValueError, match="no knob"):
        build_objective("sft", {"temperature": 2.0})
    with pytest.raises(ValueError, match="unknown training objective 'opu'"):
        build_objective("opu")
    with pytest.raises(ValueError, match="weight must be >= 0"):
        build_objective("two_terms_for_tests", {"weight": -1.0})


def test_objective_config_accepts_a_bare_name_and_knobs(two_terms):
    assert TrainConfig(objective="sft", steps=1).objective.name == "sft"
    cfg = TrainConfig(objective={"name": "two_terms_for_tests", "weight": 0.25}, steps=1)
    assert cfg.objective.knobs == {"weight": 0.25}
    with pytest.raises(ValidationError, match="no knob"):
        TrainConfig(objective={"name": "sft", "weight": 0.25}, steps=1)


def test_pretraining_with_an_objective_that_needs_a_model_is_refused():
    """Before the registry, `pretrain.objective=oput` silently trained SFT."""
    with pytest.raises(ConfigError, match=r"pretrain\.objective='oput' fine-tunes an existing model"):
        load_config("smoke", ["pretrain.objective=oput"])


def test_every_term_is_logged_and_the_loss_is_their_sum(tokenizer, problems, two_terms):
    data = duplicate_for_oput(encode_conversations(tokenizer, [(p.question, p.answer) for p in problems[:8]], 96, 32))
    model = tiny_model(tokenizer=tokenizer)
    recorder = _Recorder()
    cfg = TrainConfig(objective={"name": "two_terms_for_tests", "weight": 2.0}, steps=3, batch_size=4, lr=1e-3,
                      max_seq_len=96, log_every=1, seed=5)
    train_model(model, data, cfg, block_length=32, mask_id=model.mask_token_id, logger=recorder)
    assert [step for step, _ in recorder.rows] == [1, 2, 3]
    for _, metrics in recorder.rows:
        ce, l2 = metrics["train/loss/ce"], metrics["train/loss/l2"]
        assert l2 > 0 and ce > 0
        assert metrics["train/loss"] == pytest.approx(ce + l2, rel=1e-5)
        assert metrics["train/weight"] == 2.0


def test_sft_through_the_registry_is_the_plain_masked_loss(tokenizer, problems):
    """The registered SFT logs one term, `ce`, equal to the total (the numbers before the registry)."""
    data = duplicate_for_oput(encode_conversations(tokenizer, [(p.question, p.answer) for p in problems[:8]], 96, 32))
    model = tiny_model(tokenizer=tokenizer)
    recorder = _Recorder()
    torch.manual_seed(0)
    train_model(model, data, TrainConfig(objective="sft", steps=2, batch_size=4, max_seq_len=96, log_every=1),
                block_length=32, mask_id=model.mask_token_id, logger=recorder)
    for _, metrics in recorder.rows:
        assert metrics["train/loss/ce"] == pytest.approx(metrics["train/loss"], rel=1e-6)
