"""The MLflow model registry of dmax checkpoints: candidates, and a champion moved only by the rule.

Every tracked `train` registers its checkpoint as a new version of `dmax-<family>-<preset>` (family =
the training objective: `oput` for DMax checkpoints, `sft` for the plain fine-tuning control) and points
the alias `candidate` at it. After a tracked `evaluate`, the version whose weights were measured (found
by their digest) is tagged with its headline figures, and the alias `champion` of the `oput` family
moves to it only if `evaluation.rules.beats_champion` says so; the reason is kept in the version tag
`dmax.champion_decision`. A version is the plain checkpoint directory (no MLflow flavour):
`mlflow artifacts download -u models:/dmax-oput-tiny@champion -d champion/` and load it like any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dmax_core.evaluation.records import Headline
from dmax_core.evaluation.rules import ChampionDecision, Standing, beats_champion
from dmax_core.objectives import OBJECTIVES
from dmax_core.results import ModelCandidate
from dmax_core.tracking.store import safe_name

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
# The family whose versions compete for `champion`: the headline's DMax cell is the OPUT model.
DIGEST_TAG = "dmax.checkpoint_sha256"
# The logged-model tag listing its registered versions (mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS).
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
LOGGED_MODEL_TAG = "dmax.logged_model_id"


def registered_model_name(preset: str, family: str) -> str:
    """One registered model per preset and family: versions only compete within one task and scale."""
    return f"dmax-{safe_name(family)}-{safe_name(preset)}"


def register_candidate(client: MlflowClient, preset: str, run_id: str, candidate: ModelCandidate,
                       tags: Mapping[str, str], model_id: str | None = None) -> tuple[str, str]:
    """Register `runs:/<run_id>/<candidate.output>` and point `candidate` at it; returns (name, version).

    With `model_id` (the run's logged model of this checkpoint) the two are linked both ways: the logged
    model lists the version under `mlflow.modelVersions`, as `mlflow.register_model` does, so its page in
    the UI shows where it was registered; the version carries the id in `LOGGED_MODEL_TAG`. The id is not
    passed as `create_model_version(model_id=...)`: an MLflow server then requires the source to lie in the
    logged model's own artifacts (ours points at the run's copy of the weights) and refuses `runs:/...`,
    and a sqlite or PostgreSQL registry does not keep it anyway."""
    name = registered_model_name(preset, candidate.family)
    try:
        client.create_registered_model(name, description=OBJECTIVES.get(candidate.family).description.format(
            preset=preset))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{candidate.output}", run_id=run_id,
        tags={**tags, "dmax.train_run_id": run_id, DIGEST_TAG: candidate.digest,
              **({LOGGED_MODEL_TAG: model_id} if model_id else {})},
    ).version
    client.set_registered_model_alias(name, CANDIDATE_ALIAS, version)
    if model_id is not None:
        listed = json.loads(client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG, "[]"))
        client.set_logged_model_tags(model_id, {
            MODEL_VERSIONS_TAG: json.dumps([*listed, {"name": name, "version": str(version)}])})
    return name, str(version)


def find_version(client: MlflowClient, name: str, digest: str) -> str | None:
    """The newest version of `name` whose weights have this digest (None if there is none)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    matching = [int(v.version) for v in versions if v.tags.get(DIGEST_TAG) == digest]
    return str(max(matching)) if matching else None


def _recorded_standing(tags: Mapping[str, str]) -> Standing | None:
    try:
        return Standing(accuracy=float(tags["eval.accuracy"]), tpf=float(tags["eval.tpf"]))
    except (KeyError, ValueError):
        return None


def promote_if_better(client: MlflowClient, name: str, version: str, headline: Headline,
                      tolerance_pp: float) -> ChampionDecision:
    """Tag `version` with its headline figures and move `champion` to it if the champion rule says so."""
    for key, value in headline.metrics().items():
        if "/" not in key:  # the DMax cell's own figures and the ratio, not the baseline's
            client.set_model_version_tag(name, version, f"eval.{key}", f"{value:.6g}")
    try:
        current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        current = None
    if current is not None and str(current.version) == str(version):
        decision = ChampionDecision(True, "already champion")
    else:
        decision = beats_champion(
            Standing.of(headline), None if current is None else _recorded_standing(current.tags), tolerance_pp,
            champion_exists=current is not None,
        )
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "dmax.champion_decision", decision.reason)
    return decision
