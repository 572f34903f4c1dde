from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import ROLLOUT_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def coldstart_op(aligned_model: Input[Model], dataset: Input[Dataset], sids: Input[Dataset], corpus: Input[Dataset],
                 config_json: str, model: Output[Model], metrics: Output[Metrics], curves: Output[Markdown],
                 max_steps: int = 0, tracking_uri: str = ""):
    """Cold-start reasoning activation (paper §3.3.1): SFT on `<think>reasoning</think>` + SID targets."""
    import shutil
    from pathlib import Path

    from sidreasoner_core.reasoning.stage import CURVES_MD, coldstart_step
    from sidreasoner_core.kfp_metrics import log_metrics
    from sidreasoner_core.run_config import check_stage_gpus

    check_stage_gpus(config_json, "coldstart")
    values = coldstart_step(config_json, aligned_model.path, dataset.path, sids.path, corpus.path, model.path,
                            tracking_uri, "", max_steps=max_steps or None)
    log_metrics(metrics, values)
    shutil.copyfile(Path(model.path) / CURVES_MD, curves.path)


@dsl.component(base_image=ROLLOUT_IMAGE, install_kfp_package=False)
def grpo_op(model_in: Input[Model], dataset: Input[Dataset], sids: Input[Dataset], config_json: str,
            model: Output[Model], metrics: Output[Metrics], curves: Output[Markdown],
            max_steps: int = 0, num_generations: int = 0, tracking_uri: str = ""):
    """GRPO (paper §3.3.2): stepwise prefix-match + validity reward; curves of reward, lengths, Recall@10."""
    import shutil
    from pathlib import Path

    from sidreasoner_core.reasoning.stage import CURVES_MD, grpo_step
    from sidreasoner_core.kfp_metrics import log_metrics
    from sidreasoner_core.run_config import check_stage_gpus

    check_stage_gpus(config_json, "grpo")
    values = grpo_step(config_json, model_in.path, dataset.path, sids.path, model.path, tracking_uri, "",
                       max_steps=max_steps or None, num_generations=num_generations or None)
    log_metrics(metrics, values)
    shutil.copyfile(Path(model.path) / CURVES_MD, curves.path)
