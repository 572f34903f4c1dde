"""The cluster preset carries the paper's settings (§4.1.3): the table in docs/paper-settings.md
against the effective values a `cluster` run gets (batch = per-device x accumulation x GPUs)."""
import re
from pathlib import Path

import pytest

from pipelines import contract
from sidreasoner_core.align.config import EARLY_STOP_TASK
from sidreasoner_core.stages import config_class, validate_pipeline_config

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "paper-settings.md"


def paper_table() -> dict[str, str]:
    rows = {}
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", cells[0]):
            rows[cells[0]] = cells[1]
    return rows


def _gpus(function: str) -> int:
    """GPUs the compiled pipeline gives the task running `function`."""
    return next(p.gpus for p in contract.placements() if p.function == function)


def effective(config: dict) -> dict[str, object]:
    """The values a run with `config` trains with, in the units of the paper."""
    from sidreasoner_core.reasoning.grpo import batch_plan

    stage = {s: config_class(s).build(dict(config.get(s) or {})) for s in ("align", "coldstart", "grpo", "evaluate")}
    align, cold, grpo = stage["align"], stage["coldstart"], stage["grpo"]
    for opts, fn in ((align.train, "align_op"), (cold.train, "coldstart_op")):
        assert opts.num_gpus <= _gpus(fn), f"{fn}: num_gpus {opts.num_gpus} > the {_gpus(fn)} GPU(s) placed"
    world = grpo.cluster.num_gpus
    assert world <= _gpus("grpo_op")
    plan = batch_plan(grpo, world_size=world)
    gsm8k = Path(align.gsm8k_train)
    return {
        "align.batch": align.train.per_device_train_batch_size * align.train.gradient_accumulation_steps
        * align.train.num_gpus,
        "align.learning_rate": align.train.learning_rate,
        "align.max_epochs": align.train.num_train_epochs,
        "align.early_stopping_patience": align.train.early_stopping_patience,
        "align.early_stopping_task": EARLY_STOP_TASK,
        "align.gsm8k_train_rows": sum(1 for _ in open(gsm8k if gsm8k.is_absolute() else REPO / gsm8k)),
        "coldstart.epochs": cold.train.num_train_epochs if cold.train.max_steps < 0 else None,
        "coldstart.learning_rate": cold.train.learning_rate,
        "coldstart.self_traces": cold.self_traces.enabled,
        "grpo.rollouts": grpo.num_generations,
        # completions per optimizer step / group size = prompts per step
        "grpo.batch_prompts": plan["per_device_train_batch_size"] * plan["gradient_accumulation_steps"] * world
        // grpo.num_generations,
        "grpo.kl": grpo.beta,
        # the upper clip bound TRL uses: epsilon_high, else epsilon
        "grpo.clip": (grpo.epsilon, grpo.epsilon if grpo.epsilon_high is None else grpo.epsilon_high),
        "grpo.format_weight": grpo.reward.format_weight,
        "grpo.likelihood_weight": grpo.reward.likelihood_weight,
        "grpo.learning_rate": grpo.learning_rate if grpo.warmup_ratio == 0 else None,
        "grpo.max_completion_length": grpo.max_completion_length,
        "grpo.publish": grpo.publish,
        "grpo.early_stopping_patience": grpo.early_stopping_patience,
        "evaluate.beams": stage["evaluate"].num_beams,
    }


def _same(paper: str, value) -> bool:
    try:
        return float(paper) == pytest.approx(float(value), rel=1e-9)
    except (TypeError, ValueError):
        return paper == str(value)


CLUSTER = validate_pipeline_config("cluster", name="cluster")


@pytest.mark.parametrize("setting", sorted(paper_table()))
def test_cluster_run_gets_the_papers_value(setting):
    values = effective(CLUSTER)
    assert setting in values, f"docs/paper-settings.md row {setting!r} has no check"
    assert _same(paper_table()[setting], values[setting]), \
        f"{setting}: the paper says {paper_table()[setting]}, a cluster run gets {values[setting]}"


def test_table_covers_the_papers_settings():
    rows = paper_table()
    for prefix, names in {"align": ("batch", "learning_rate", "early_stopping_patience"),
                          "coldstart": ("epochs", "learning_rate"),
                          "grpo": ("rollouts", "batch_prompts", "kl", "format_weight", "learning_rate"),
                          "evaluate": ("beams",)}.items():
        for name in names:
            assert f"{prefix}.{name}" in rows


def test_a_lost_gpu_count_is_caught():
    """The defect this table was written for: no num_gpus -> 16 x 8 x 1 = 128, not 1024."""
    broken = {**CLUSTER, "align": {**CLUSTER["align"], "train": {**CLUSTER["align"]["train"]}}}
    del broken["align"]["train"]["num_gpus"]
    assert effective(broken)["align.batch"] == 128
    assert not _same(paper_table()["align.batch"], effective(broken)["align.batch"])
