"""A TRL-signature reward for the reward-server tests: word count, NaN when the response says so."""


def words_or_nan(prompts, completions, **kwargs):
    return [float("nan") if "NaN" in c else float(len(c.split())) for c in completions]
