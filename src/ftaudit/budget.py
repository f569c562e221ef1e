"""What a run would cost, estimated from its config alone and checked before any training.

Each field has its own bound (``ftaudit.config``), but bounded fields still multiply: 4096
references × 10 000 epochs is within both bounds and would train for years. So every built-in study
has an estimate of its largest costs, each a :class:`Cost` naming the config keys that drive it:

* **compute** — models × examples (or tokens) seen × 6 × multiply-adds per example (forward and
  backward), summed over the run's trainings; refused above :data:`MAX_FLOPS` (about a week of a
  2-core CPU at :data:`FLOPS_PER_SECOND`);
* **memory** — bytes held at once: a vectorized chunk's parameters with gradients and Adam state
  (DP-SGD adds a per-sample gradient per row of the batch), and the signal arrays of all models;
  refused above :data:`MAX_BYTES` of the 24 GiB the tool is built for;
* **bootstrap** — replicates × pooled rows, the metrics' work.

The estimates are deliberately rough (within a small factor): they are there to refuse, up front
and with the field to change, a run that could never finish, not to predict its time. Studies
registered from outside have no estimate and are not checked here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ftaudit.errors import UserError

FLOPS_PER_SECOND = 5e10          # a 2-core CPU, sustained, float32
MAX_FLOPS = FLOPS_PER_SECOND * 7 * 24 * 3600   # ≈ 3e16: a week of training
MAX_BYTES = 20 * 2**30           # of a 24 GiB machine, leaving room for Python, torch and the OS
MAX_BOOTSTRAP_WORK = 5e10        # replicates × pooled rows × attacks (≈ 10 minutes of sorting)
DIGIT_PIXELS = 64                # an 8×8 digit
DIGIT_CLASSES = 10


@dataclass(frozen=True)
class Cost:
    """One estimated cost of a run and the config keys that drive it."""

    what: str
    fields: tuple[str, ...]
    flops: float = 0.0
    bytes: float = 0.0
    bootstrap: float = 0.0


def check_budget(cfg: Any) -> list[Cost]:
    """Refuse a config whose estimated compute, memory or bootstrap work exceeds what one 24 GiB,
    2-core machine could do (a UserError naming the fields to lower); return the estimates."""
    estimate = ESTIMATES.get(getattr(cfg, "study", None))
    costs = estimate(cfg) if estimate is not None else []
    for cost in costs:
        fields = ", ".join(cost.fields)
        if cost.flops > MAX_FLOPS:
            days = cost.flops / FLOPS_PER_SECOND / 86400
            raise UserError(cost.fields[0], f"{cost.what} would take about {cost.flops:.1e} floating-point operations "
                            f"(~{days:,.0f} days on 2 CPU cores; the limit is {MAX_FLOPS:.1e}, a week)",
                            f"lower {fields}")
        if cost.bytes > MAX_BYTES:
            raise UserError(cost.fields[0], f"{cost.what} would hold about {cost.bytes / 2**30:,.1f} GiB at once "
                            f"(the limit is {MAX_BYTES / 2**30:.0f} GiB of a 24 GiB machine)", f"lower {fields}")
        if cost.bootstrap > MAX_BOOTSTRAP_WORK:
            raise UserError(cost.fields[0], f"{cost.what} would resample {cost.bootstrap:.1e} rows "
                            f"(the limit is {MAX_BOOTSTRAP_WORK:.1e})", f"lower {fields}")
    return costs


# ------------------------------------------------------------------------------------ networks


def mlp_size(hidden: list[int], n_in: int = DIGIT_PIXELS, n_out: int = DIGIT_CLASSES) -> tuple[int, int]:
    """(parameters, multiply-adds per example) of ``models.vision.mlp``."""
    widths = [n_in, *hidden, n_out]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    return params, params


def cnn_size(channels: list[int], n_out: int = DIGIT_CLASSES, fc: int = 64) -> tuple[int, int]:
    """(parameters, multiply-adds per example) of ``models.vision.cnn`` on 8×8 inputs."""
    widths = [1, *channels]
    conv = sum(9 * a * b + b for a, b in zip(widths, widths[1:]))
    dense = channels[-1] * 16 * fc + fc + fc * n_out + n_out
    return conv + dense, conv * DIGIT_PIXELS + dense


def vision_size(arch: str, hidden: list[int], channels: list[int]) -> tuple[int, int]:
    return mlp_size(hidden) if arch == "mlp" else cnn_size(channels)


def transformer_size(vocab: int, block_len: int, n_layer: int, n_embd: int) -> tuple[int, int]:
    """(parameters, multiply-adds per token) of the tiny GPT-2 / BERT (4 × n_embd inner width)."""
    body = 12 * n_layer * n_embd ** 2
    params = body + (vocab + block_len) * n_embd
    return params, body + vocab * n_embd + 2 * n_layer * block_len * n_embd


def train_flops(models: float, examples: float, macs: float) -> float:
    """Forward and backward (≈ 3 × forward = 6 multiply-adds' flops) of ``examples`` per model."""
    return 6.0 * models * examples * macs


def chunk_bytes(models: int, chunk: int, params: int, batch: int = 0, dp: bool = False) -> float:
    """A vectorized chunk's float32 parameters, gradients and two Adam moments (DP-SGD: plus a
    per-sample gradient for each row of the batch)."""
    at_once = max(1, min(models, chunk))
    return 4.0 * at_once * params * (4 + (batch if dp else 0))


# ------------------------------------------------------------------------------------- studies


def _digits(cfg: Any, cells: int, models_per_cell: int, epochs: int, dp: bool, cell_fields: tuple[str, ...]) -> list[Cost]:
    params, macs = vision_size(cfg.model.arch, cfg.model.hidden, cfg.model.channels)
    ft = cfg.finetune
    rows = cfg.data.audit_size / 2
    arch = ("model.channels",) if cfg.model.arch == "cnn" else ("model.hidden",)
    n_views = 1 + 4 * cfg.attack.shifts
    targets = cfg.attack.targets or models_per_cell
    return [
        Cost("pretraining", ("pretrain.epochs", "data.pretrain_size", *arch),
             flops=train_flops(1, cfg.data.pretrain_size * cfg.pretrain.epochs, macs)),
        Cost("fine-tuning", (*cell_fields, "finetune.references", "finetune.epochs", "data.audit_size", *arch),
             flops=train_flops(cells * models_per_cell, rows * epochs, macs)),
        Cost("a vectorized chunk of models", ("engine.chunk", "finetune.batch_size", *arch),
             bytes=chunk_bytes(models_per_cell, cfg.engine.chunk, params, ft.batch_size, dp)),
        Cost("the signals", ("finetune.references", "data.audit_size", "attack.shifts"),
             bytes=8.0 * 3 * models_per_cell * (cfg.data.audit_size + cfg.data.population_size) * n_views),
        Cost("the bootstrap", ("metrics.bootstrap", "finetune.references", "data.audit_size"),
             bootstrap=float(cfg.metrics.bootstrap) * targets * cfg.data.audit_size * len(cfg.attack.names)),
    ]


def finetune_mia(cfg: Any) -> list[Cost]:
    return _digits(cfg, 1, cfg.finetune.n_models, cfg.finetune.epochs, cfg.finetune.dp.enabled, ())


def methods(cfg: Any) -> list[Cost]:
    from ftaudit.config import ensemble_size

    cells = len(cfg.sweep.methods) * len(cfg.sweep.lrs)
    return _digits(cfg, cells, ensemble_size(cfg.finetune.references), cfg.finetune.epochs, False,
                   ("sweep.methods", "sweep.lrs"))


def dp_finetune(cfg: Any) -> list[Cost]:
    from ftaudit.config import ensemble_size

    sw = cfg.sweep
    searched = len(sw.subsets) * len(sw.lrs) * len(sw.clips)
    per_epsilon = searched + ensemble_size(cfg.finetune.references)
    return _digits(cfg, len(sw.epsilons), per_epsilon, cfg.finetune.epochs, True,
                   ("sweep.epsilons", "sweep.subsets", "sweep.lrs", "sweep.clips"))


def forgetting(cfg: Any) -> list[Cost]:
    fg = cfg.forgetting
    params, macs = vision_size(fg.arch, fg.hidden, fg.channels)
    arch = ("forgetting.channels",) if fg.arch == "cnn" else ("forgetting.hidden",)
    runs = len(fg.schedules) * (2 if fg.determinism == "both" else 1)
    poison_steps = fg.poison_epochs * -(-fg.n_injected // fg.batch_size)
    steps = max(fg.inject_step, poison_steps) + fg.checkpoints[-1]
    rows = fg.batch_size + fg.inject_per_step
    n_views = 1 + 4 * cfg.attack.shifts
    return [
        Cost("training", ("forgetting.models", "forgetting.checkpoints", "forgetting.inject_step",
                          "forgetting.poison_epochs", "forgetting.batch_size", *arch),
             flops=train_flops(runs * fg.models, steps * rows, macs)),
        Cost("a vectorized chunk of models", ("engine.chunk", *arch), bytes=chunk_bytes(fg.models, cfg.engine.chunk, params)),
        Cost("the checkpoint signals", ("forgetting.models", "forgetting.checkpoints", "forgetting.per_repetition"),
             bytes=8.0 * 3 * runs * fg.models * len(fg.checkpoints) * (fg.n_injected + fg.population_size) * n_views),
    ]


def tmi(cfg: Any) -> list[Cost]:
    t = cfg.tmi
    params, macs = vision_size(t.arch, cfg.model.hidden, cfg.model.channels)
    arch = ("model.channels",) if t.arch == "cnn" else ("model.hidden",)
    finetunes = 1 + len(t.methods) + len(t.epsilons)
    return [
        Cost("shadow training", ("tmi.shadows", "tmi.pretrain_epochs", "tmi.finetune_epochs", "tmi.pool", *arch),
             flops=train_flops(t.shadows, t.pool / 2 * t.pretrain_epochs + finetunes * t.finetune_size * t.finetune_epochs,
                               macs)),
        Cost("a vectorized chunk of models", ("engine.chunk", *arch),
             bytes=chunk_bytes(t.shadows, cfg.engine.chunk, params, cfg.finetune.batch_size, bool(t.epsilons))),
        Cost("the query outputs", ("tmi.shadows", "tmi.pool", "tmi.augmentations"),
             bytes=4.0 * finetunes * t.shadows * t.pool * t.augmentations * DIGIT_CLASSES),
    ]


def tmi_text(cfg: Any) -> list[Cost]:
    t = cfg.tmi
    params, macs = transformer_size(t.vocab_size, t.block_len, t.n_layer, t.n_embd)
    finetunes = 1 + len(t.methods) + len(t.epsilons)
    tokens = t.pool / 2 * t.block_len * t.pretrain_epochs + finetunes * t.finetune_blocks * t.block_len * t.finetune_epochs
    return [
        Cost("shadow training", ("tmi.shadows", "tmi.pretrain_epochs", "tmi.pool", "tmi.n_embd", "tmi.n_layer"),
             flops=train_flops(t.shadows, tokens, macs)),
        Cost("one model's training state", ("tmi.n_embd", "tmi.vocab_size", "tmi.batch_size", "tmi.block_len"),
             bytes=16.0 * params + 4.0 * t.batch_size * t.block_len * (t.vocab_size + 16 * t.n_layer * t.n_embd)),
        Cost("the query outputs", ("tmi.shadows", "tmi.pool", "tmi.augmentations", "tmi.block_len"),
             bytes=4.0 * finetunes * t.shadows * t.pool * t.augmentations * t.block_len),
    ]


LM_CORPUS_BLOCKS = 20_000  # lm.pretrain_blocks = 0 (the whole corpus): bundled corpora are smaller than this


def _lm(cfg: Any, models: float, blocks: float, epochs: int, cell_fields: tuple[str, ...] = ()) -> list[Cost]:
    lm, ft = cfg.lm, cfg.finetune
    params, macs = transformer_size(lm.vocab_size, lm.block_len, lm.n_layer, lm.n_embd)
    size = ("lm.n_embd", "lm.n_layer")
    pretrain_blocks = lm.pretrain_blocks or LM_CORPUS_BLOCKS
    return [
        Cost("pretraining the tiny base", ("lm.pretrain_blocks", "lm.pretrain_epochs", *size),
             flops=train_flops(1, pretrain_blocks * lm.block_len * lm.pretrain_epochs, macs) if lm.tiny else 0.0),
        Cost("fine-tuning", (*cell_fields, "finetune.references", "finetune.epochs", "lm.n_blocks", *size),
             flops=train_flops(models, blocks * lm.block_len * epochs, macs)),
        Cost("one model's training state", ("finetune.batch_size", "lm.block_len", "lm.vocab_size", *size),
             bytes=16.0 * params + 4.0 * ft.batch_size * lm.block_len * (lm.vocab_size + 16 * lm.n_layer * lm.n_embd)),
    ]


def _lm_signals(cfg: Any, models: float, per_token: int = 4) -> Cost:
    lm = cfg.lm
    return Cost("the per-token signals", ("finetune.references", "lm.n_blocks", "lm.block_len"),
                bytes=4.0 * per_token * models * (lm.n_blocks + lm.population) * lm.block_len)


def lm_mia(cfg: Any) -> list[Cost]:
    m = cfg.finetune.n_models
    return [*_lm(cfg, m + 1, cfg.lm.n_blocks / 2, cfg.finetune.epochs), _lm_signals(cfg, m + 2)]


def mlm_ratio(cfg: Any) -> list[Cost]:
    m = cfg.finetune.n_models
    return [*_lm(cfg, m + 1, cfg.lm.n_blocks / 2 * cfg.lm.maskings, cfg.finetune.epochs),
            _lm_signals(cfg, m + 2, per_token=4 * cfg.lm.maskings)]


def lm_methods(cfg: Any) -> list[Cost]:
    cells = len(cfg.sweep.methods) * len(cfg.sweep.lrs)
    m = cfg.finetune.n_models
    return [*_lm(cfg, cells * m + 1, cfg.lm.n_blocks / 2, cfg.finetune.epochs, ("sweep.methods", "sweep.lrs")),
            _lm_signals(cfg, cells * m + 2)]


def lm_extraction(cfg: Any) -> list[Cost]:
    ex = cfg.extraction
    costs = _lm(cfg, 1, ex.finetune_blocks, cfg.finetune.epochs)
    costs[1] = Cost("fine-tuning", ("extraction.finetune_blocks", "finetune.epochs", "lm.n_embd", "lm.n_layer"),
                    flops=costs[1].flops)
    _, macs = transformer_size(cfg.lm.vocab_size, cfg.lm.block_len, cfg.lm.n_layer, cfg.lm.n_embd)
    sampled = 2 * ex.prompts * len(ex.repetitions) * ex.samples * ex.suffix_len * cfg.lm.block_len
    references = ex.references + ex.canaries * len(ex.repetitions)
    costs.append(Cost("generation and canary scoring", ("extraction.samples", "extraction.prompts", "extraction.references"),
                      flops=2.0 * macs * (sampled + references * cfg.lm.block_len)))
    return costs


def stealing(cfg: Any) -> list[Cost]:
    from ftaudit.studies.stealing.config import CANDIDATE

    st = cfg.stealing
    biggest = max(((int(m.group(1)), int(m.group(2))) for m in map(CANDIDATE.match, st.candidates)),
                  key=lambda lw: lw[0] * lw[1] ** 2)
    params, macs = transformer_size(st.vocab_size, st.block_len, *biggest)
    n = len(st.candidates)
    victims = n * len(st.victim_methods) * st.victim_seeds
    tokens_victim = st.classes * st.train_per_class * st.block_len * st.victim_epochs
    distill = len(st.victim_methods) * st.distill_victims * (len(st.budgets) + len(st.prune_fractions))
    return [
        Cost("pretraining the candidates", ("stealing.candidates", "stealing.pretrain_blocks", "stealing.pretrain_epochs"),
             flops=train_flops(n, st.pretrain_blocks * st.block_len * st.pretrain_epochs, macs)),
        Cost("fine-tuning the victims", ("stealing.victim_epochs", "stealing.victim_seeds", "stealing.train_per_class",
                                         "stealing.classes"), flops=train_flops(victims, tokens_victim, macs)),
        Cost("distillation", ("stealing.distill_steps", "stealing.budgets", "stealing.batch_size"),
             flops=train_flops(distill, st.distill_steps * st.batch_size * st.block_len, macs)),
        Cost("one model's training state", ("stealing.candidates", "stealing.batch_size", "stealing.block_len"),
             bytes=16.0 * params + 4.0 * st.batch_size * st.block_len * (st.vocab_size + 16 * biggest[0] * biggest[1])),
    ]


ESTIMATES: dict[str, Callable[[Any], list[Cost]]] = {
    "finetune-mia": finetune_mia, "methods": methods, "dp-finetune": dp_finetune, "forgetting": forgetting,
    "tmi": tmi, "tmi-text": tmi_text, "lm-mia": lm_mia, "mlm-ratio": mlm_ratio, "lm-methods": lm_methods,
    "lm-extraction": lm_extraction, "stealing": stealing,
    # audit: the user's own model, whose size is known only once it is loaded
}
