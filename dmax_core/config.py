"""One typed, validated settings tree for every stage.

Presets live in `params/<name>.yaml` (a preset may start from another with `base: <name>`); users
override any leaf with `dotted.key=value`. Unknown keys and bad values are errors that name the key,
so a typo can never silently fall back to a default. The task (`task.name` and its knobs), the
decoding policies (`decoding.<policy>.<knob>`) and `train.objective` are validated against their registries
(`dmax_core.tasks.TASKS`, `dmax_core.decoding.POLICIES`, `dmax_core.objectives.OBJECTIVES`),
imported only when a config is validated, because the registries are where the knobs are declared. Tasks
and decoding sit below this module; the objective registry sits in training, above it (the trainer reads
`TrainConfig`): the one upward import of the package (docs/layers.md).
This module only reads and validates; it does not create directories or touch the model. It is longer
than most modules (about 400 lines) on purpose: the whole settings tree and its loading rules in one
file, so that every knob a preset can set is found in one place.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dmax_core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _policies():
    from dmax_core.decoding import POLICIES, SWEPT_KNOB  # torch: only when a config is validated

    return POLICIES, SWEPT_KNOB


def _tasks():
    from dmax_core.tasks import TASKS

    return TASKS


def _objectives():
    from dmax_core.objectives import OBJECTIVES  # torch: only when a config is validated

    return OBJECTIVES


def model_names() -> tuple[str, ...]:
    """The models a run can hold: `base`, then the checkpoint each registered training objective writes
    (`dmax` for OPUT, `control` for SFT, ...), in registry order."""
    objectives = _objectives()
    return ("base", *dict.fromkeys(objectives.get(name).checkpoint for name in objectives.names()))


class TaskConfig(BaseModel):
    """The task (`dmax_core.tasks`) by name; every other key is one of that task's knobs.

    For the embedded tasks: split sizes (`n_train`, `n_validation`, `n_test`), the split `seed`, and
    `min_steps`/`max_steps`, which bound the statements of an answer (operations of a running total,
    people of a ledger). The resolved config lists every knob with its value.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "running_total"

    @model_validator(mode="after")
    def _knobs(self) -> TaskConfig:
        tasks = _tasks()
        knobs = tasks.resolve(self.name, dict(self.model_extra or {}))  # unknown name or knob: ValueError
        tasks.build(self.name, knobs)  # the task's own checks of the values
        self.__pydantic_extra__ = knobs
        return self

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @staticmethod
    def dynamic_keys() -> list[str]:
        tasks = _tasks()
        return sorted({knob for name in tasks.names() for knob in tasks.knobs(name)})


class DecodingConfig(BaseModel):
    """Knobs of every registered decoding policy (`decoding.<policy>.<knob>`) and of the frame.

    A policy's `threshold` is not set here: evaluation sweeps it (`evaluate.thresholds`) and distillation
    sets it (`distill.threshold`). Every other knob of every policy is, with its default filled in.
    `max_forwards_per_block` caps forwards per block in the frame (default: the block length); `compile`
    compiles the block step (`decoding.frame.generate_batch(compiled=True)`).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    max_forwards_per_block: int | None = Field(None, ge=1)
    # Block forwards through torch.compile over a fixed-shape cache, one row at a time (batch_size 1):
    # for batch-1 speed on GPUs; results equal the eager path up to float rounding.
    compile: bool = False

    @model_validator(mode="after")
    def _policy_knobs(self) -> DecodingConfig:
        policies, swept = _policies()
        given = dict(self.model_extra or {})
        for name in given:
            policies.get(name)  # unknown policy -> ValueError listing the known ones
        resolved: dict[str, dict[str, Any]] = {}
        for name in policies.names():
            knobs = given.get(name) or {}
            if not isinstance(knobs, dict):
                raise ValueError(f"decoding.{name} must be a mapping of knob: value, got {knobs!r}")
            if swept in knobs:
                raise ValueError(f"decoding.{name}.{swept} is not set here: use evaluate.thresholds / "
                                 f"distill.{swept}")
            resolved[name] = policies.resolve(name, knobs, exclude=(swept,))
            policies.build(name, {swept: 1.0, **resolved[name]})  # the policy's own checks of the values
        self.__pydantic_extra__ = resolved
        return self

    def knobs(self, policy: str) -> dict[str, Any]:
        """The knobs of `policy` other than its threshold."""
        return dict((self.model_extra or {})[policy])

    @staticmethod
    def dynamic_keys() -> list[str]:
        policies, swept = _policies()
        keys = []
        for name in policies.names():
            keys.append(name)
            keys += [f"{name}.{k}" for k in policies.knobs(name) if k != swept]
        return keys


def _check_decoder(name: str) -> str:
    _policies()[0].get(name)
    return name


class ModelConfig(_Strict):
    """Architecture knobs of a from-scratch LLaDA2-MoE model (names as in LLaDA2.0-mini config.json).

    `base_path` points at an existing checkpoint directory (e.g. a downloaded LLaDA2.0-mini); when it
    is set, `pretrain` is skipped and the architecture fields are ignored.
    """

    base_path: Path | None = None
    # Weights dtype when loaded for decoding: `auto` keeps the checkpoint's (bf16 for LLaDA2.0-mini).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    hidden_size: int = Field(128, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    head_dim: int = Field(32, ge=2)
    intermediate_size: int = Field(512, ge=1)
    moe_intermediate_size: int = Field(128, ge=1)
    first_k_dense_replace: int = Field(3, ge=0)
    num_experts: int = Field(8, ge=0)
    num_experts_per_tok: int = Field(2, ge=1)
    num_shared_experts: int = Field(1, ge=0)
    n_group: int = Field(2, ge=1)
    topk_group: int = Field(1, ge=1)
    routed_scaling_factor: float = Field(2.5, gt=0)
    partial_rotary_factor: float = Field(0.5, gt=0, le=1)
    rope_theta: float = Field(600000.0, gt=0)
    max_position_embeddings: int = Field(1024, ge=16)
    rms_norm_eps: float = Field(1e-6, gt=0)


class ObjectiveConfig(BaseModel):
    """The training objective (`dmax_core.objectives`) by name; every other key is one of its knobs.

    A bare name is accepted (`train.objective=sft`), as are `train.objective.name=...` and knob overrides;
    the resolved config lists every knob with its value."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "sft"

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _knobs(self) -> ObjectiveConfig:
        objectives = _objectives()
        knobs = objectives.resolve(self.name, dict(self.model_extra or {}))  # unknown name or knob: ValueError
        objectives.build(self.name, knobs)  # the objective's own checks of the values
        self.__pydantic_extra__ = knobs
        return self

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @staticmethod
    def dynamic_keys() -> list[str]:
        objectives = _objectives()
        return sorted({knob for name in objectives.names() for knob in objectives.knobs(name)})


class TrainConfig(_Strict):
    """One trainer for every registered objective: block-diffusion SFT (`sft`), On-Policy Uniform Training
    (`oput`), ... (`train.objective`, `dmax_core.objectives`).

    Defaults follow spec §2.3 where they make sense at tiny scale; presets change lr/steps.
    """

    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    noise_low: float = Field(0.3, ge=0, le=1)
    noise_high: float = Field(0.8, ge=0, le=1)
    max_seq_len: int = Field(128, ge=8)
    labelled_pad_tokens: int | None = Field(None, ge=0)
    # `all`: every response position + the head of the pad run is labelled (DMax, spec §1.1 step 5).
    # `masked`: only positions that were masked (upstream dFactory/LLaDA semantics, the objective the
    # real base model LLaDA2.0-mini was trained with; used to pretrain the tiny stand-in base).
    loss_positions: Literal["all", "masked"] = "all"
    checkpoint_every: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    seed: int = 42
    # Under a distributed launch: shard the model by decoder layer with FSDP2 (`training/sharding.py`),
    # compute in bf16 with fp32 master weights (`mixed_precision: bf16`), keep the shards on the CPU,
    # recompute each layer's activations in the backward pass.
    fsdp: bool = False
    # Micro-batches per step: each process's rows of the step, a part at a time (same result, less memory).
    grad_accumulation: int = Field(1, ge=1)
    # "fp32", not "no": YAML 1.1 reads an unquoted `no` (as DVC writes params.yaml back) as false.
    mixed_precision: Literal["fp32", "bf16"] = "fp32"
    cpu_offload: bool = False
    activation_checkpointing: bool = False

    @model_validator(mode="after")
    def _sharding_options_need_fsdp(self) -> TrainConfig:
        used = [name for name in ("cpu_offload", "activation_checkpointing") if getattr(self, name)]
        if self.mixed_precision != "fp32":
            used.append("mixed_precision")
        if used and not self.fsdp:
            raise ValueError(f"{', '.join(used)} apply to sharded training: set fsdp: true as well")
        return self

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.noise_low > self.noise_high:
            raise ValueError(f"noise_low ({self.noise_low}) > noise_high ({self.noise_high})")
        if self.steps is None and self.epochs is None:
            raise ValueError("set either steps or epochs")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) > lr ({self.lr})")
        return self


class DistillConfig(_Strict):
    """How the base model writes its own trajectory dataset (spec §2.1: answers by the base model)."""

    n_prompts: int = Field(2000, ge=1)
    decoder: str = "threshold"
    threshold: float = Field(0.9, ge=0, le=1)
    gen_length: int = Field(96, ge=1)
    keep_incorrect: bool = True
    # Prompts decoded at once (continuous batching); every row's output equals its batch-of-one output.
    batch_size: int = Field(1, ge=1)
    # Import a released trajectory dataset instead of decoding (DMax's `question`/`answer` rows: a local
    # file or directory, or `hub:Zigeng/DMax-LLaDA-2.0-Mini-Math-Trajectories` with allow_download).
    trajectories: str | None = None
    allow_download: bool = False
    # Split the prompts into this many shards, decoded apart (one worker each) and merged in order;
    # `shard` set: decode that shard only (what a worker runs; the Prefect flow `dmax-distill` fans out).
    shards: int = Field(1, ge=1)
    shard: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> DistillConfig:
        if self.shard is not None and self.shard >= self.shards:
            raise ValueError(f"distill.shard={self.shard} is not one of the {self.shards} shards "
                             f"(0..{self.shards - 1})")
        return self

    _decoder = field_validator("decoder")(_check_decoder)


class EvaluateConfig(_Strict):
    """The {model} x {decoder} x {threshold} grid on held-out problems."""

    models: list[str] = ["base", "dmax"]
    decoders: list[str] = ["threshold", "spd"]
    thresholds: list[float] = [1.0, 0.9, 0.7, 0.5, 0.3]
    n_test: int | None = Field(None, ge=1)
    n_validation: int | None = Field(None, ge=1)
    gen_length: int = Field(96, ge=1)
    samples_to_keep: int = Field(20, ge=0)
    # Problems decoded at once per cell. Per-sample TPS is the paper's (latency at batch 1) only at 1;
    # `throughput` (tokens / wall time) is reported beside it at any batch size.
    batch_size: int = Field(1, ge=1)
    # Benchmarks evaluated beside the run's own task, each over the same grid and reported on its own
    # (`{name: gsm8k, path: data/gsm8k, limit: 50}`; knobs as in `task`). Nothing is chosen on them.
    tasks: list[TaskConfig] = []
    # Decoders per model where they differ from `decoders` (`{base: [threshold], dmax: [spd]}`: the paper's
    # comparison without the cross cells, which at 2048 tokens on a 16B model cost GPU hours).
    decoders_of: dict[str, list[str]] = {}
    # Checkpoint directories that replace the run's own for a model name (`dmax: /models/DMax-Math-16B`):
    # evaluate released checkpoints without training them here.
    checkpoints: dict[str, Path] = {}

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        bad = [t for t in self.thresholds if not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"thresholds must lie in [0, 1], got {bad}")
        if not self.thresholds or not self.models or not self.decoders:
            raise ValueError("models, decoders and thresholds must be non-empty")
        models = model_names()
        unknown = [m for m in self.models if m not in models]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(models)}")
        for decoder in self.decoders:
            _check_decoder(decoder)
        for decoder in (d for decoders in self.decoders_of.values() for d in decoders):
            _check_decoder(decoder)
        unknown = [m for m in [*self.checkpoints, *self.decoders_of] if m not in models]
        if unknown:
            raise ValueError(f"checkpoints/decoders_of name unknown model(s) {unknown}; known: {', '.join(models)}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks lists a benchmark twice: {names}")
        for spec in self.tasks:
            if not _tasks().get(spec.name).has_reference:
                raise ValueError(f"task {spec.name!r} has no reference answers: it cannot be evaluated")
        return self


class ThreadsConfig(_Strict):
    """CPU threads per kind of stage, chosen from `benchmarks/threads.py` (2-core AMD EPYC, README):
    a second thread makes training 1.5x and batched decoding 1.5x faster on an idle machine, but makes
    batch-1 decoding slower (12.1 s against 11.1 s), and with one other process busy it makes every one
    of them slower (batch-1 decoding 4x, batched decoding 2.5x, training 1.7x).

    `null` = automatic: all cores (torch's default) for training and batched decoding, one thread for
    batch-1 decoding. On a machine shared with other work set both to 1."""

    train: int | None = Field(None, ge=1)  # pretrain, train
    decode: int | None = Field(None, ge=1)  # distill, evaluate


class ReportConfig(_Strict):
    """What the report draws beyond the tables (the comparison itself is `experiment`)."""

    # Samples per task whose decoding by the experiment's method is traced and drawn step by step
    # (report/trace-*.png), at the sweep's lowest threshold, first `trace_blocks` blocks.
    trace_samples: int = Field(2, ge=0)
    trace_blocks: int = Field(2, ge=1)


class ArmConfig(_Strict):
    """One side of an experiment's comparison: a {model, decoder} pair and how its threshold is picked.

    `threshold` a number: that threshold, fixed (the paper's 0.5 for math, 0.65 for code), measured on the
    test split even where the sweep lacks it. `threshold: chosen`: the largest-TPF threshold of the sweep
    whose accuracy on the `choose_on` split is within the experiment's tolerance of the `reference`
    accuracy: `one_token` (this pair at threshold 1.0, one token per forward) or `best` (its most accurate
    threshold); the arm's test cell at that threshold is the one compared."""

    model: str
    decoder: str
    threshold: float | Literal["chosen"] = "chosen"
    choose_on: Literal["test", "validation"] = "test"
    reference: Literal["one_token", "best"] = "best"

    @field_validator("threshold")
    @classmethod
    def _in_unit_interval(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 <= value <= 1.0:
            raise ValueError(f"a fixed threshold must lie in [0, 1], got {value}")
        return value

    @field_validator("decoder")
    @classmethod
    def _registered(cls, value: str) -> str:
        return _check_decoder(value)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in model_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(model_names())}")
        return value

    @property
    def fixed(self) -> float | None:
        """The fixed threshold, or None when it is chosen."""
        return None if self.threshold == "chosen" else float(self.threshold)


class TaskExperimentConfig(_Strict):
    """One evaluated task's departures from the experiment: arm fields (`method: {threshold: 0.5}`) and a
    held-out slice to choose thresholds on."""

    baseline: dict[str, Any] = {}
    method: dict[str, Any] = {}
    # A benchmark has no validation split: the first `holdout` rows of its test problems become one (an
    # arm with `choose_on: validation` chooses there) and the test split is the rest, disjoint from it.
    holdout: int = Field(0, ge=0)


class ExperimentConfig(_Strict):
    """What a run compares, on every evaluated task (`evaluation.rules`), fixed before any test number.

    The default is the paper's question at tiny scale: the base model with threshold decoding at the
    fastest threshold within `tolerance_pp` of its own one-token-per-forward accuracy (chosen on test, in
    the baseline's favour), against the OPUT model with SPD at the threshold chosen on the validation split.
    `min_base_accuracy` refuses the comparison when the baseline pair at threshold 1.0 is less accurate
    (an under-trained base; `null`: no gate, e.g. with fixed thresholds and no 1.0 cell). `primary` is the
    task whose headline is the run's (bare MLflow names, the champion rule); default: the first evaluated.
    `tasks` departs from the default per task (`TaskExperimentConfig`)."""

    baseline: ArmConfig = ArmConfig(model="base", decoder="threshold", choose_on="test", reference="one_token")
    method: ArmConfig = ArmConfig(model="dmax", decoder="spd", choose_on="validation", reference="best")
    tolerance_pp: float = Field(1.0, ge=0)
    min_base_accuracy: float | None = Field(0.9, ge=0, le=1)
    primary: str | None = None
    tasks: dict[str, TaskExperimentConfig] = {}

    @model_validator(mode="after")
    def _task_arms_are_valid(self) -> ExperimentConfig:
        for name in self.tasks:
            self.arms(name)  # an unknown or bad arm field fails here, naming the task
        return self

    def arms(self, task: str) -> tuple[ArmConfig, ArmConfig]:
        """(baseline, method) on `task`: the experiment's arms with the task's departures applied."""
        spec = self.tasks.get(task, TaskExperimentConfig())
        try:
            return (ArmConfig(**{**self.baseline.model_dump(), **spec.baseline}),
                    ArmConfig(**{**self.method.model_dump(), **spec.method}))
        except ValidationError as exc:
            raise ValueError(f"experiment.tasks.{task}: {exc.errors()[0]['msg']} "
                             f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from None

    def holdout(self, task: str) -> int:
        return self.tasks[task].holdout if task in self.tasks else 0


class DmaxConfig(_Strict):
    """The whole resolved configuration of one run."""

    preset: str = "custom"
    seed: int = 0
    # Where models run: `auto` = the first CUDA GPU when there is one, else the CPU.
    device: str = "auto"
    block_length: int = Field(32, ge=1)
    run_dir: Path = Path("runs/tiny")
    threads: ThreadsConfig = ThreadsConfig()
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = ModelConfig()
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    pretrain: TrainConfig = Field(default_factory=lambda: TrainConfig(objective="sft", steps=1000))
    distill: DistillConfig = DistillConfig()
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(objective="oput", epochs=1.0))
    evaluate: EvaluateConfig = EvaluateConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    report: ReportConfig = ReportConfig()

    def evaluated_tasks(self) -> list[str]:
        """Every task `evaluate` measures, in order: the run's own (when it is scored), then `evaluate.tasks`.

        A generated task always has scored test problems; a file task, when it has reference answers."""
        own = [self.task.name] if _tasks().get(self.task.name).has_reference else []
        return [*own, *(t.name for t in self.evaluate.tasks if t.name not in own)]

    @property
    def primary_task(self) -> str | None:
        """The task whose headline is the run's (`experiment.primary`, else the first evaluated)."""
        tasks = self.evaluated_tasks()
        return self.experiment.primary or (tasks[0] if tasks else None)

    @model_validator(mode="after")
    def _experiment_names_evaluated_tasks(self) -> DmaxConfig:
        tasks = self.evaluated_tasks()
        unknown = [t for t in [*self.experiment.tasks, *filter(None, [self.experiment.primary])] if t not in tasks]
        if unknown:
            raise ValueError(f"experiment names task(s) {unknown} that are not evaluated; evaluated: "
                             f"{', '.join(tasks) or 'none'} (the run's task, then evaluate.tasks)")
        return self

    @model_validator(mode="after")
    def _pretraining_starts_from_scratch(self) -> DmaxConfig:
        objective = _objectives().get(self.pretrain.objective.name)
        if not objective.from_scratch:
            raise ValueError(f"pretrain.objective={objective.name!r} fine-tunes an existing model, it cannot train a "
                             "base from random weights: pretrain with sft, and use it in train.objective")
        return self

    @model_validator(mode="after")
    def _compile_decodes_one_row_at_a_time(self) -> DmaxConfig:
        if self.decoding.compile and (self.distill.batch_size != 1 or self.evaluate.batch_size != 1):
            raise ValueError("decoding.compile decodes one row at a time: set distill.batch_size=1 and "
                             "evaluate.batch_size=1 (or turn compile off to batch)")
        return self

    @model_validator(mode="after")
    def _frame_cap_admits_the_policies(self) -> DmaxConfig:
        """A cap below a policy's own forward limit would stop every long block with an error, hours into
        a run: refuse it while the config is read instead."""
        cap = self.decoding.max_forwards_per_block
        if cap is not None:
            policies, swept = _policies()
            evaluated = [*self.evaluate.decoders, *(d for ds in self.evaluate.decoders_of.values() for d in ds)]
            for name in dict.fromkeys([self.distill.decoder, *evaluated]):
                limit = policies.build(name, {swept: 1.0, **self.decoding.knobs(name)}).forward_limit(
                    self.block_length)
                if limit is not None and limit > cap:
                    raise ValueError(f"decoding.max_forwards_per_block={cap} is below the {limit} forwards per "
                                     f"block that decoding policy {name!r} may take (block_length "
                                     f"{self.block_length}, its knobs {self.decoding.knobs(name)})")
        return self

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        """`auto`, `cpu`, `cuda` or `cuda:N`, checked here so a typo fails before any model loads."""
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    def to_flat_dict(self) -> dict[str, Any]:
        """Dotted leaf keys -> scalar values (MLflow params, DVC-style listings)."""
        return {
            key: value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
            for key, value in flatten_mapping(self.model_dump(mode="json")).items()
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def flatten_mapping(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_mapping(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_path(preset: str | Path) -> Path:
    """Resolve a preset name (`tiny`) or a YAML path to a file, with a helpful error."""
    candidate = Path(preset)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"config file not found: {candidate}")
        return candidate
    for root in (Path.cwd() / "params", PROJECT_ROOT / "params"):
        path = root / f"{preset}.yaml"
        if path.is_file():
            return path
    known = sorted(p.stem for p in (PROJECT_ROOT / "params").glob("*.yaml"))
    raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known) or 'none'}")


def _read_preset(preset: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = preset_path(preset)
    if str(path) in seen:
        raise ConfigError(f"preset inheritance loop: {' -> '.join((*seen, str(path)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    parent = data.pop("base", None)
    name = data.pop("preset", Path(path).stem)
    if parent is not None:
        data = _deep_merge(_read_preset(parent, (*seen, str(path))), data)
    data["preset"] = name
    return data


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key an override may set. A mapping field keyed by names the user chooses
    (`experiment.tasks`, `evaluate.checkpoints`) is listed as `<key>.*`: any key below it is accepted here
    and checked when the config is validated."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        annotation = field.annotation
        if getattr(annotation, "__origin__", None) is dict:
            keys.append(f"{dotted}.*")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{dotted}."))
            dynamic = getattr(annotation, "dynamic_keys", None)  # registry-backed knobs
            if dynamic is not None:
                keys.extend(f"{dotted}.{key}" for key in dynamic())
    return keys


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a raw config mapping."""
    data = _deep_merge({}, data)
    known = _known_keys(DmaxConfig)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in known and not any(k.endswith(".*") and key.startswith(k[:-1]) for k in known):
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse value of {key}: {exc}") from exc
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1], start=1):
            child = node.get(part, {})
            if isinstance(child, str) and ".".join(parts[:depth]) + ".name" in known:
                # A bare name (`objective: oput` in a preset) is the group {name: oput}, so its name and
                # knobs can be overridden one key at a time (`train.objective.name=mmd`).
                child = {"name": child}
            node[part] = child
            node = child
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key}: {part} is not a group")
        node[parts[-1]] = value
    return data


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {message}" + (" (unknown key)" if err["type"] == "extra_forbidden" else ""))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def build_config(data: dict[str, Any]) -> DmaxConfig:
    try:
        return DmaxConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def pop_preset_flag(args: list[str], default: str = "tiny") -> tuple[str, list[str]]:
    """Split `--preset NAME` out of a benchmark script's free-form `key=value` arguments.

    The scripts take overrides positionally (like the CLI), so the flag is picked out by hand; one helper
    keeps them from each growing their own copy."""
    if "--preset" not in args:
        return default, list(args)
    at = args.index("--preset")
    if at + 1 >= len(args):
        raise ConfigError("--preset needs a preset name")
    return args[at + 1], args[:at] + args[at + 2 :]


def load_config(preset: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> DmaxConfig:
    """Read a preset (name in params/ or YAML path), apply overrides, validate."""
    return build_config(apply_overrides(_read_preset(preset), list(overrides)))
