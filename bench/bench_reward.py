"""The reward both trainers optimize in the benchmark: cheap, pure Python, identical on both sides,
so the timing measures the trainers, not a reward model."""


def length_reward(prompts, completions, **kwargs):
    return [min(len(c), 120) / 120.0 for c in completions]
