"""The RL loop and what it is built from: components, rollout, log-probs, objectives, the trainer, checkpoints."""
