"""Container images the components run in on the cluster (built from docker/)."""
REGISTRY = "ghcr.io/sidreasoner"
VERSION = "0.1.0"
CPU_IMAGE = f"{REGISTRY}/sidreasoner-cpu:{VERSION}"          # docker/cpu.Dockerfile
TRAINER_IMAGE = f"{REGISTRY}/sidreasoner-trainer:{VERSION}"  # docker/trainer.Dockerfile (CUDA, DeepSpeed)
ROLLOUT_IMAGE = f"{REGISTRY}/sidreasoner-rollout:{VERSION}"  # docker/rollout.Dockerfile (CUDA, vLLM)
