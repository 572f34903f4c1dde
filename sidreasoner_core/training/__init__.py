"""The training core every training stage builds on (stages import it, never each other).

- `options`: trainer options shared by the stages (`SFTOptions`, GRPO's `ClusterConfig`)
- `trl_args`: our options -> TRL's configs, by TRL's own field names
- `sft`: multi-task SFT through TRL's SFTTrainer (alignment, cold-start)
- `launch`: the one multi-process launcher (`accelerate launch`, DeepSpeed configs in `accelerate_configs/`)
- `checkpoints`: work directories and resumable checkpoints
- `runtime`: device, precision and CPU threads
"""
