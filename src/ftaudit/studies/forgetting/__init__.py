"""The ``forgetting`` study (Jagielski et al. 2022): ``config`` (its schema), ``study`` (data,
schedules, checkpointed training, the headline request), ``report`` (decay curves and tables) and
``compare`` (verdicts, said only where a paired CI allows)."""
