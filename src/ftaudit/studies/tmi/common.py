"""Small steps both TMI studies take: the fine-tuning recipe of a method (and DP ε), the DP record
as table cells, and what identifies a queried model's architecture in signal cache keys."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ftaudit.config import OptimConfig
from ftaudit.dp.spec import DPSpec, dp_spec
from ftaudit.finetune.methods import MethodOptions
from ftaudit.studies.tmi.scoring import Config


@dataclass(frozen=True)
class Recipe:
    """How the shadows are fine-tuned with one method: optimiser, method options and DP (None = off)."""

    optim: OptimConfig
    opts: MethodOptions
    dp: DPSpec | None


def finetune_recipe(cfg: Config, method: str, epsilon: float | None, n_rows: int, batch_size: int,
                    augment: int) -> Recipe:
    """``tmi.method``'s epochs and per-method lr (``tmi.lrs``) with the ``finetune`` section's optimiser
    and method options; ``epsilon`` (when given) sets the DP target on top of ``finetune.dp``."""
    f, t = cfg.finetune, cfg.tmi
    optim = OptimConfig(optimizer=f.optimizer, lr=t.lrs[method], momentum=f.momentum, weight_decay=f.weight_decay,
                        epochs=t.finetune_epochs, batch_size=batch_size, augment=augment)
    dp_cfg = f.dp if epsilon is None else f.dp.model_copy(update={"epsilon": epsilon})
    dp = dp_spec(dp_cfg, n_rows, batch_size, optim.epochs, field="tmi.epsilons" if epsilon else "finetune.dp")
    return Recipe(optim, MethodOptions.from_config(f), dp)


def dp_columns(record: dict | None) -> dict:
    """The engine's DP record as table cells: what was calibrated and what the accountants give."""
    if record is None:
        return {}
    return {"noise σ": f"{record['noise_multiplier']:.3g}", "steps": record["steps"],
            "ε (dp_accounting)": f"{record['epsilon_reference']:.3g}", "δ": f"{record['delta']:.2g}",
            "clip": record["clip"]}


def template_arch(template: nn.Module) -> dict:
    """How a model's weights are read, for signal cache keys (a model key names only the weights)."""
    return {"module": type(template).__name__,
            "params": {n: list(p.shape) for n, p in template.state_dict().items()}}
