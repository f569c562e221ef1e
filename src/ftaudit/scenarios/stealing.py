"""``stealing``: model extraction of a fine-tuned BERT classifier served as a black box.

Following "Revealing Secrets From Pre-trained Models": fine-tuned weights stay close to the public
base they started from, so an attacker who can tell *which* base a victim came from can estimate its
weights from there. Here, with what an API user can measure (answers and latency):

1. candidates — tiny BERT bases of several sizes, seeds and pretraining corpora, pretrained by the
   engine and stored as HF directories; victims — classifiers fine-tuned from each (full, LoRA, head)
   on a topic task (which article a block comes from), served by :class:`BlackBox`;
2. identification — the architecture from latency profiles (``stealing/latency.py``), the checkpoint
   from outputs (a linear probe on each candidate's features, ``stealing/identify.py``), over every
   victim and several query budgets;
3. weight estimation — distil the victim from its answers starting from the identified base, vs from
   random init and from a wrong base of the same architecture: agreement, accuracy, distance to the
   victim's weights, over query budgets;
4. pruning — train only the top p % of encoder elements, ranked by the consistency (SNR) or the size
   (Fisher) of the distillation-loss gradients (``stealing/pruning.py``).

Inputs are ``stealing.block_len`` tokens with [CLS] first; the classifiers pool the mean hidden state
(``models/lm.MeanPooler``) because MLM-only tiny bases carry nothing a head can read at [CLS].
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ftaudit.attacks.evaluate import PooledScores
from ftaudit.config import CANDIDATE, OptimConfig, RunConfig
from ftaudit.data.text import Corpus, load_corpus, make_blocks
from ftaudit.data.tokenizer import MASK_ID, train_tokenizer
from ftaudit.errors import UserError
from ftaudit.finetune.methods import MethodOptions, get_method, head_prefixes
from ftaudit.metrics import mean_ci
from ftaudit.models.lm import _quiet_hf as quiet_hf
from ftaudit.models.lm import LMWrapper, bert_classifier, initial_state, lm_arch_spec, load_pretrained, tiny_bert
from ftaudit.scenarios.base import Context, Figure, Scenario, Section, Series, StudyOutput
from ftaudit.scenarios.lm_study import blocks_of, lm_engine, lm_threads
from ftaudit.seeding import derive_seed
from ftaudit.stealing.blackbox import BlackBox
from ftaudit.stealing.identify import encoder_features, identify_base
from ftaudit.stealing.latency import LatencyGrid, identify_architecture, latency_profile
from ftaudit.stealing.pruning import SCORES, change_recall, gradient_scores, relative_distance, top_fraction_masks
from ftaudit.store.cache import content_key
from ftaudit.train.engine import Job, TrainGroup
from ftaudit.train.mlm import masked_lm_objective
from ftaudit.train.objectives import IGNORE
from ftaudit.finetune.methods import init_state

INITS = ("identified base", "wrong base", "random init")


@dataclass(frozen=True)
class Candidate:
    name: str
    n_layer: int
    n_embd: int
    corpus: str
    seed: int

    @property
    def arch(self) -> str:
        return f"{self.n_layer}x{self.n_embd}"

    @classmethod
    def parse(cls, spec: str) -> "Candidate":
        layers, width, corpus, seed = CANDIDATE.match(spec).groups()
        return cls(spec, int(layers), int(width), corpus, int(seed))


@dataclass
class Labelled:
    """Token blocks with class targets (labels [n] or teacher probabilities [n, K]), Split-like for the engine."""

    x: np.ndarray
    y: np.ndarray

    def digest(self) -> str:
        return content_key(x=self.x, y=self.y)


@dataclass
class Trained:
    template: LMWrapper  # the built model (method parameters included)
    states: list[dict]
    keys: list[str]


def train(ctx: Context, cfg: RunConfig, name: str, model: LMWrapper, method: str, inits: list[dict], data: Labelled,
          seeds: list[int], objective: str, epochs: int, lr: float, masks: dict | None = None,
          trainable: list[str] | None = None) -> Trained:
    """The engine trains one model per (init, seed) on all of ``data`` (cached by content)."""
    m, opts = get_method(method), MethodOptions.from_config(cfg.finetune)
    torch.manual_seed(derive_seed(0, "method-init", m.name))
    built = m.build(model, opts)
    optim = OptimConfig(optimizer="adam", lr=lr, epochs=epochs, batch_size=cfg.stealing.batch_size)
    group = TrainGroup(name=name, template=built, arch=lm_arch_spec(model), method=m.name, method_options=m.spec(opts),
                       trainable=trainable or m.trainable(built, opts), optim=optim, x=torch.from_numpy(data.x),
                       y=torch.from_numpy(data.y), data_digest=data.digest(), objective=objective,
                       jobs=[Job(init=init_state(built, i), rows=np.arange(len(data.x)), seed=s) for i, s in zip(inits, seeds)],
                       **({"masks": masks} if masks else {}))
    result = lm_engine(ctx, cfg).train(group)
    ctx.models_trained += result.trained
    ctx.models_loaded += result.loaded
    return Trained(built, result.states(), result.keys)


# ------------------------------------------------------------------------------- the world


def with_cls(ids: np.ndarray, cls_id: int) -> np.ndarray:
    """Every input of this scenario starts with [CLS], as BERT's do, in pretraining, fine-tuning and
    every query alike (with ``stealing.pooling=cls`` the pooler reads that position)."""
    return np.concatenate([np.full((len(ids), 1), cls_id, dtype=np.int64), ids.astype(np.int64)], axis=1)


def candidate_bases(ctx: Context, cfg: RunConfig, tok) -> dict[str, tuple[Candidate, LMWrapper, dict]]:
    """Every candidate pretrained (cached), written as an HF directory and loaded back from it."""
    st = cfg.stealing
    out = {}
    for spec in st.candidates:
        c = Candidate.parse(spec)
        if c.n_embd % 2:
            raise UserError("stealing.candidates", f"{spec}: width must be even (2 attention heads)", "use e.g. 2x64")
        model = tiny_bert(len(tok), st.block_len, n_layer=c.n_layer, n_embd=c.n_embd, n_head=2,
                          seed=derive_seed(c.seed, "candidate-init", c.arch, c.corpus))
        blocks = blocks_of(c.corpus, "stealing.candidates", "stealing.pretrain_blocks", tok, st.block_len - 1,
                           st.pretrain_blocks, derive_seed(c.seed, "candidate-blocks", c.corpus))
        x = with_cls(blocks.x, tok.cls_token_id)
        targets = np.where(np.arange(x.shape[1]) == 0, IGNORE, x)  # [CLS] is never masked nor predicted
        trained = train(ctx, cfg, f"pretrain candidate {spec}", model, "full", [initial_state(model)],
                        Labelled(x, targets), [derive_seed(c.seed, "candidate-pretrain")],
                        masked_lm_objective(MASK_ID), st.pretrain_epochs, st.pretrain_lr)
        where = Path(ctx.store.root) / "cache" / "candidates" / trained.keys[0]
        if not (where / "config.json").exists():
            trained.template.load_state_dict(trained.states[0])
            with quiet_hf():
                trained.template.lm.save_pretrained(where)
                tok.save_pretrained(where)
        base = load_pretrained(where, kind="masked-lm", field="stealing.candidates")
        out[spec] = (c, base, initial_state(base))
    return out


def task_data(cfg: RunConfig, tok, seed: int) -> tuple[Labelled, Labelled]:
    """(train, test): blocks of the ``classes`` longest articles of ``task_corpus``, labelled by article."""
    st = cfg.stealing
    docs = sorted(load_corpus(st.task_corpus, field="stealing.task_corpus").documents, key=len, reverse=True)
    if len(docs) < st.classes:
        raise UserError("stealing.classes", f"{st.task_corpus} has {len(docs)} articles", "ask for fewer classes")
    n = st.train_per_class + st.test_per_class
    try:
        parts = [make_blocks(Corpus.from_text(d, f"article {k}"), tok, st.block_len - 1, n, derive_seed(seed, "task", k))
                 for k, d in enumerate(docs[:st.classes])]
    except UserError as exc:
        raise UserError("stealing.train_per_class", exc.problem, "ask for fewer blocks per class, fewer classes or a "
                        "shorter stealing.block_len") from None
    split = lambda lo, hi: Labelled(with_cls(np.concatenate([p.ids[lo:hi] for p in parts]), tok.cls_token_id),  # noqa: E731
                                    np.repeat(np.arange(st.classes), hi - lo))
    return split(0, st.train_per_class), split(st.train_per_class, n)


def query_pool(cfg: RunConfig, tok, n: int, seed: int) -> np.ndarray:
    """``n`` attacker queries, [CLS] first: blocks of public text, or uniformly random non-special tokens."""
    st = cfg.stealing
    if st.queries == "random":
        rng = np.random.default_rng([seed, 0x0E1])
        body = rng.integers(5, len(tok), size=(n, st.block_len - 1))
    else:
        body = blocks_of(st.query_corpus, "stealing.query_corpus", "stealing.budgets", tok, st.block_len - 1, n, seed).ids
    return with_cls(body, tok.cls_token_id)


@dataclass
class Victim:
    index: int
    base: str  # candidate spec
    method: str
    seed: int
    key: str  # model cache key
    state: dict  # effective weights (LoRA merged), plain classifier names
    module: LMWrapper  # served (merged), never handed to the attacker: only BlackBox(module)
    test_pred: np.ndarray  # its labels on the held-out blocks (the ground truth agreement is measured against)


def encoder_names(state: dict) -> list[str]:
    """The encoder's parameters (``lm.bert.*`` but the pooler, which is part of the head)."""
    return [k for k in state if k.startswith("lm.bert.") and not k.startswith("lm.bert.pooler.")]


def student_targets(cfg: RunConfig, answers: np.ndarray) -> tuple[str, np.ndarray]:
    """(objective, targets) for training on the API's answers: labels if top-1, else probabilities."""
    if cfg.stealing.top1:
        return "classification", answers.astype(np.int64)
    return "distillation", answers.astype(np.float32)


def effective(built: LMWrapper, state: dict) -> tuple[LMWrapper, dict]:
    """The served model: LoRA merged into its base layers (as deployments do); plain names."""
    served = copy.deepcopy(built)
    served.load_state_dict(state)
    for module in served.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    names = {k.replace(".base_layer", ""): v.detach().clone() for k, v in served.state_dict().items() if "lora_" not in k}
    return served.eval(), names


def victims(ctx: Context, cfg: RunConfig, cands: dict, train_set: Labelled, test_set: Labelled) -> list[Victim]:
    st = cfg.stealing
    out = []
    for spec, (c, base, _) in cands.items():
        for method in st.victim_methods:
            inits, seeds = [], []
            for s in range(st.victim_seeds):
                model, init = bert_classifier(base, st.classes, derive_seed(cfg.seed, "victim-head", spec, method, s),
                                              pooling=st.pooling)
                inits.append(init)
                seeds.append(derive_seed(cfg.seed, "victim", spec, method, s))
            trained = train(ctx, cfg, f"victims {spec} {method}", model, method, inits, train_set, seeds, "classification",
                            st.victim_epochs, st.victim_lrs[method])
            for s, state in enumerate(trained.states):
                served, eff = effective(trained.template, state)
                out.append(Victim(len(out), spec, method, s, trained.keys[s], eff, served,
                                  predictions(served, served.state_dict(), test_set.x)))
    return out


# ---------------------------------------------------------------------------- the attacks


def predictions(model: LMWrapper, state: dict, x: np.ndarray) -> np.ndarray:
    model.load_state_dict(state)
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(-1).numpy()


def latency_identification(cfg: RunConfig, cands: dict, vics: list[Victim], seed: int) -> tuple[dict, dict]:
    """({victim index: identified arch}, {victim index: {arch: distance}}); the profile of every
    architecture measured on the attacker's own copy (a classifier with a random head)."""
    st = cfg.stealing
    grid = LatencyGrid(tuple(st.latency_lengths), tuple(st.latency_batches), st.latency_repeats, cfg.lm.vocab_size, seed)
    local = {}
    for spec, (c, base, _) in cands.items():
        if c.arch not in local:
            model, init = bert_classifier(base, st.classes, seed, pooling=st.pooling)
            model.load_state_dict(init)
            local[c.arch] = BlackBox(model.eval(), top1=st.top1, max_batch=max(st.latency_batches))
    profiles = {arch: latency_profile(lambda ids, bb=bb: bb.timed_query(ids)[1], grid) for arch, bb in local.items()}
    found, dists = {}, {}
    for v in vics:
        bb = BlackBox(v.module, top1=st.top1, max_batch=max(st.latency_batches))
        found[v.index], dists[v.index] = identify_architecture(latency_profile(lambda ids: bb.timed_query(ids)[1], grid),
                                                               profiles)
    return found, dists


def answer(v: Victim, cfg: RunConfig, queries: np.ndarray) -> np.ndarray:
    """The victim's API answers on ``queries`` (probabilities, or labels if top-1)."""
    bb = BlackBox(v.module, top1=cfg.stealing.top1, max_batch=len(queries))
    return bb.query(queries)


def agreement(cfg: RunConfig, pred: np.ndarray, victim_pred: np.ndarray) -> dict:
    m = cfg.metrics
    return mean_ci((pred == victim_pred).astype(np.float64), m.ci_level, m.bootstrap, cfg.seed)


def fmt(est: dict, pct: bool = True) -> str:
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(est['value'])} [{f(est['lo'])}, {f(est['hi'])}]"


def distil(ctx: Context, cfg: RunConfig, v: Victim, init_name: str, base: LMWrapper, encoder: dict, queries: np.ndarray,
           answers: np.ndarray, test: Labelled, method: str = "full", masks: dict | None = None) -> dict:
    """One student: ``base``'s architecture, encoder ``encoder`` (a base's or a random one), a fresh
    head; trained on the victim's answers; measured against the victim."""
    st = cfg.stealing
    model, init = bert_classifier(base, st.classes, derive_seed(cfg.seed, "student-head"), pooling=st.pooling)
    init = {**init, **{k: v_ for k, v_ in encoder.items() if k in init}}
    objective, y = student_targets(cfg, answers)
    epochs = max(1, round(st.distill_steps * st.batch_size / len(queries)))
    names = encoder_names(init)
    trainable = None
    if masks is not None:
        heads = [k for k in init if k.startswith(head_prefixes(model))]
        trainable = heads + sorted(masks)
    trained = train(ctx, cfg, f"student of victim {v.index} ({init_name}, {len(queries)} queries)", model, method, [init],
                    Labelled(queries, y), [derive_seed(cfg.seed, "student", v.index)], objective, epochs, st.distill_lr,
                    masks=masks, trainable=trainable)
    state = trained.states[0]
    pred = predictions(model, {k: w for k, w in state.items() if k in model.state_dict()}, test.x)
    same_arch = all(k in v.state and v.state[k].shape == state[k].shape for k in names)
    return {"agreement": agreement(cfg, pred, v.test_pred), "accuracy": float((pred == test.y).mean()),
            "distance": relative_distance(state, v.state, names) if same_arch else float("nan"), "state": state,
            "model": model, "names": names}


# ------------------------------------------------------------------------------------ run


def check_config(cfg: RunConfig) -> None:
    for dotted in ("finetune.epochs", "finetune.lr", "finetune.batch_size", "lm.block_len"):
        section, key = dotted.split(".")
        if key in getattr(cfg, section).model_fields_set:
            raise UserError(dotted, "the stealing scenario does not read it",
                            "set stealing.victim_epochs / victim_lrs / batch_size / block_len instead")
    if cfg.finetune.dp.enabled:
        raise UserError("finetune.dp.epsilon", "the stealing scenario has no DP victims", "leave it unset")
    if min(cfg.stealing.budgets) < 4:
        raise UserError("stealing.budgets", "a student needs at least 4 queries", "use budgets of 4 or more")


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_config(cfg)
    st, lm = cfg.stealing, cfg.lm
    seeds = {"run": cfg.seed, "task": derive_seed(cfg.seed, "task"), "queries": derive_seed(cfg.seed, "queries"),
             "latency": derive_seed(cfg.seed, "latency")}
    with lm_threads(cfg):
        with ctx.stage("data"):
            corpora = sorted({Candidate.parse(c).corpus for c in st.candidates} | {st.task_corpus, st.query_corpus})
            docs = [d for name in corpora for d in load_corpus(name, field="stealing.candidates").documents]
            tok = train_tokenizer(docs, lm.vocab_size, cache_dir=Path(ctx.store.root) / "cache" / "tokenizers")
            train_set, test_set = task_data(cfg, tok, seeds["task"])
            pool = query_pool(cfg, tok, max(max(st.budgets), max(st.id_budgets)), seeds["queries"])
        with ctx.stage("pretrain"):
            cands = candidate_bases(ctx, cfg, tok)
        with ctx.stage("finetune"):
            vics = victims(ctx, cfg, cands, train_set, test_set)
        with ctx.stage("identification"):
            arch_found, arch_dist = latency_identification(cfg, cands, vics, seeds["latency"])
            feats = {spec: encoder_features(base, state, pool[:max(st.id_budgets)]) for spec, (_, base, state) in cands.items()}
            id_answers = {v.index: answer(v, cfg, pool[:max(st.id_budgets)]) for v in vics}
            probe = {(v.index, n): identify_base({s: f[:n] for s, f in feats.items()}, id_answers[v.index][:n], st.classes)
                     for v in vics for n in st.id_budgets}
        with ctx.stage("distillation"):
            estimates, pruning = weight_estimation(ctx, cfg, cands, vics, arch_found, probe, pool, test_set)

    arch_of = {spec: c.arch for spec, (c, _, _) in cands.items()}
    n_big = max(st.id_budgets)
    specs = list(cands)
    pairs = [(v, s) for v in vics for s in specs]
    labels = np.array([v.base == s for v, s in pairs])
    pooled = PooledScores(
        scores={"probe-fit": np.array([probe[(v.index, n_big)][1][s] for v, s in pairs]),
                "latency": np.array([-arch_dist[v.index][arch_of[s]] for v, s in pairs]),
                "latency+probe": np.array([probe[(v.index, n_big)][1][s] - (1e6 if arch_of[s] != arch_found[v.index] else 0.0)
                                           for v, s in pairs])},
        labels=labels, example=np.array([specs.index(s) for _, s in pairs], dtype=np.int64),
        target=np.array([v.index for v, _ in pairs], dtype=np.int64))
    victim_acc = [float((v.test_pred == test_set.y).mean()) for v in vics]
    sections = [setup_section(cfg, cands, vics, train_set, test_set), victims_section(cfg, cands, vics, victim_acc),
                identification_section(cfg, vics, arch_of, arch_found, probe),
                *estimates, pruning]
    utility = [{**mean_ci(np.array(victim_acc), cfg.metrics.ci_level, cfg.metrics.bootstrap, cfg.seed),
                "name": "victims' task accuracy", "note": f"mean over {len(vics)} victims on {len(test_set.y)} held-out blocks"}]
    return StudyOutput(
        title="Model extraction of fine-tuned tiny BERT classifiers: base identification, weight estimation, pruning",
        signals=None, pooled=pooled, references=0, utility=utility, member_rate=labels.astype(np.float64),
        descriptions={"probe-fit": f"cross-fitted log-likelihood of the victim's answers under a linear probe on the "
                                   f"candidate's features ({n_big} queries); higher = this candidate is the base",
                      "latency": "minus the distance between the victim's latency profile and the candidate's architecture's",
                      "latency+probe": "probe-fit among the candidates of the architecture latency identified"},
        audit_arrays={"test_x": test_set.x, "test_y": test_set.y},
        models=[("victim", v.index, v.key, v.seed) for v in vics], seeds=seeds, sections=sections, notes=[])


SCENARIO = Scenario("stealing", "model extraction of fine-tuned BERT classifiers through their API: base identification "
                                "(latency, outputs), weight estimation by distillation from the base, Fisher pruning", run)


def identified(cfg: RunConfig, cands: dict, v: Victim, arch_found: dict, probe: dict) -> str:
    """The attacker's pick: the best probe fit among the candidates of the latency-identified
    architecture (all candidates if none has it)."""
    scores = probe[(v.index, max(cfg.stealing.id_budgets))][1]
    same = {s: sc for s, sc in scores.items() if cands[s][0].arch == arch_found[v.index]} or scores
    return max(same, key=same.get)




def weight_estimation(ctx: Context, cfg: RunConfig, cands: dict, vics: list[Victim], arch_found: dict, probe: dict,
                      pool: np.ndarray, test: Labelled) -> tuple[list[Section], Section]:
    st, lm = cfg.stealing, cfg.lm
    chosen = [v for v in vics if v.base == st.candidates[0] and v.seed < st.distill_victims]
    results: dict = {}
    prune_rows, prune_curves = [], {}
    for v in chosen:
        ident = identified(cfg, cands, v, arch_found, probe)
        c_id = cands[ident][0]
        wrong = next((s for s in cands if s not in (v.base, ident) and cands[s][0].arch == c_id.arch), None)
        rnd = tiny_bert(lm.vocab_size, st.block_len, n_layer=c_id.n_layer, n_embd=c_id.n_embd, n_head=2,
                        seed=derive_seed(cfg.seed, "random-student"))
        starts = {"identified base": (cands[ident][1], cands[ident][2]), "random init": (rnd, initial_state(rnd))}
        if wrong:
            starts["wrong base"] = (cands[wrong][1], cands[wrong][2])
        answers = answer(v, cfg, pool[:max(st.budgets)])
        for budget in st.budgets:
            for init_name, (model, encoder) in starts.items():
                results[(v.index, init_name, budget)] = distil(ctx, cfg, v, init_name, model, encoder, pool[:budget],
                                                               answers[:budget], test)
        prune_rows += prune(ctx, cfg, v, ident, cands, pool, answers, test, results, prune_curves)
    base_dist = {v.index: relative_distance(cands[v.base][2], v.state,
                                            results[(v.index, "identified base", st.budgets[0])]["names"]) for v in chosen}
    majority = {v.index: float(np.bincount(v.test_pred).max() / len(v.test_pred)) for v in chosen}
    return estimation_sections(cfg, chosen, results, base_dist, majority), pruning_section(cfg, prune_rows, prune_curves)


def prune(ctx: Context, cfg: RunConfig, v: Victim, ident: str, cands: dict, pool: np.ndarray, answers: np.ndarray,
          test: Labelled, results: dict, curves: dict) -> list[dict]:
    """Head-only distillation, gradient scores of the encoder there, then the top-p students."""
    st = cfg.stealing
    budget = max(st.budgets)
    base, encoder = cands[ident][1], cands[ident][2]
    queries, ans = pool[:budget], answers[:budget]
    head = distil(ctx, cfg, v, "identified base, head only", base, encoder, queries, ans, test, method="head")
    objective, y = student_targets(cfg, ans)
    scores = gradient_scores(head["model"], head["state"], head["names"], torch.from_numpy(queries), torch.from_numpy(y),
                             objective, batch=st.batch_size)
    rows = []
    for p in st.prune_fractions:
        masks = {score: top_fraction_masks(scores[score], p) for score in SCORES} if 0 < p < 1 else {}
        if p == 0:
            est = head
        elif p == 1:
            est = results[(v.index, "identified base", budget)]
        else:
            est = distil(ctx, cfg, v, f"identified base, top {p:.0%} by {st.prune_score}", base, encoder, queries, ans,
                         test, masks=masks[st.prune_score])
        found = {score: change_recall(m, cands[v.base][2], v.state, head["names"]) for score, m in masks.items()}
        curves.setdefault(v.method, []).append((p, est["agreement"], est["distance"]))
        rows.append({"victim": f"{v.index} ({v.method})", "trained share p": f"{p:.0%}",
                     "agreement": fmt(est["agreement"]), "accuracy": f"{est['accuracy']:.1%}",
                     "distance to victim": f"{est['distance']:.4f}",
                     **{f"changed elements found ({score})": f"{found[score]:.1%}" if score in found else "" for score in SCORES}})
    return rows


def estimation_sections(cfg: RunConfig, chosen: list[Victim], results: dict, base_dist: dict,
                        majority: dict) -> list[Section]:
    st = cfg.stealing
    rows, figures = [], []
    for v in chosen:
        series_a, series_d = [], []
        for init_name in INITS:
            got = [(b, results[(v.index, init_name, b)]) for b in st.budgets if (v.index, init_name, b) in results]
            if not got:
                continue
            xs = [float(b) for b, _ in got]
            series_a.append(Series(init_name, xs, [r["agreement"]["value"] for _, r in got],
                                   [r["agreement"]["lo"] for _, r in got], [r["agreement"]["hi"] for _, r in got]))
            series_d.append(Series(init_name, xs, [r["distance"] for _, r in got]))
            for b, r in got:
                rows.append({"victim": f"{v.index} ({v.method})", "student starts from": init_name, "queries": b,
                             "agreement": fmt(r["agreement"]), "accuracy": f"{r['accuracy']:.1%}",
                             "distance to victim": f"{r['distance']:.4f}", "base's distance": f"{base_dist[v.index]:.4f}",
                             "constant guess agrees": f"{majority[v.index]:.1%}"})
        series_d.append(Series("the base itself", [float(st.budgets[0]), float(st.budgets[-1])], [base_dist[v.index]] * 2))
        figures.append(Figure(f"Agreement with the victim ({v.method}) vs queries", "queries (log scale)",
                              "agreement on held-out blocks", series_a, xlog=True,
                              caption=f"Victim {v.index}: fine-tuned with {v.method} from {v.base}; {cfg.metrics.ci_level:.0%} "
                                      "bootstrap CI over the held-out blocks."))
        figures.append(Figure(f"Distance to the victim's encoder ({v.method}) vs queries", "queries (log scale)",
                              "‖θ − θ_victim‖ / ‖θ_victim‖", series_d, xlog=True))
    text = [f"Students are distilled from the victim's {'top-1 labels' if st.top1 else 'probabilities'} on "
            f"{st.queries} queries ({st.distill_steps} steps of batch {st.batch_size}, Adam {st.distill_lr:g}, all weights "
            "trained, a fresh head). They start from the identified base (latency, then the probe), from a wrong base of the "
            "same architecture, or from random init. Agreement: share of held-out task blocks on which the student's "
            "label equals the victim's ('constant guess agrees': the share a student always answering the victim's most "
            "frequent label would reach); distance: relative L2 distance of the encoder weights to the victim's (LoRA merged)."]
    return [Section("Weight estimation vs query budget", text, rows, figures)]


def pruning_section(cfg: RunConfig, rows: list[dict], curves: dict) -> Section:
    series = [Series(method, [max(p, 1e-3) for p, _, _ in pts], [a["value"] for _, a, _ in pts],
                     [a["lo"] for _, a, _ in pts], [a["hi"] for _, a, _ in pts]) for method, pts in curves.items()]
    figure = Figure("Agreement vs share of encoder weights trained", "trained share p (log scale; 0 plotted at 0.1 %)",
                    "agreement on held-out blocks", series, xlog=True)
    st = cfg.stealing
    text = [f"At {max(st.budgets)} queries, from the identified base: the head is distilled first (p = 0), the encoder "
            f"elements are scored there from the gradients of the distillation loss over batches of {st.batch_size} queries "
            f"(trained by {st.prune_score}: snr = |Σ g| / √Σ g², fisher = Σ g²), and only the top p are trained (the rest "
            "stay at the base). 'Changed elements found': share of the victim's p most-changed elements "
            "(|θ_victim − θ_base|, which the attacker never sees) that each score's top p holds; chance is p."]
    return Section("Weight-extraction pruning", text, rows, [figure])


def setup_section(cfg: RunConfig, cands: dict, vics: list[Victim], train_set: Labelled, test_set: Labelled) -> Section:
    st = cfg.stealing
    rows = [{"candidate": spec, "architecture": c.arch, "pretraining corpus": c.corpus, "seed": c.seed,
             "parameters": sum(v.numel() for v in state.values())} for spec, (c, _, state) in cands.items()]
    text = [f"{len(cands)} candidate bases, MLM-pretrained here ({st.pretrain_blocks} blocks, {st.pretrain_epochs} epochs) and "
            f"stored as HF directories under the store's cache/candidates. {len(vics)} victims: every candidate × "
            f"{', '.join(st.victim_methods)} × {st.victim_seeds} seeds, fine-tuned {st.victim_epochs} epochs (Adam; learning rate "
            f"{', '.join(f'{m} {st.victim_lrs[m]:g}' for m in st.victim_methods)}) "
            f"on {len(train_set.y)} blocks of the {st.classes} longest {st.task_corpus} articles (task: which article); "
            f"{len(test_set.y)} held-out blocks measure accuracy and agreement. The API returns "
            f"{'the top-1 label' if st.top1 else 'class probabilities'}; queries are {st.queries} "
            f"({st.query_corpus if st.queries == 'natural' else 'uniform token ids'})."]
    return Section("Setup", text, rows)


def victims_section(cfg: RunConfig, cands: dict, vics: list[Victim], accuracy: list[float]) -> Section:
    """What the victims learnt and how far fine-tuning moved them from their base, per method."""
    m = cfg.metrics
    rows = []
    for method in cfg.stealing.victim_methods:
        group = [i for i, v in enumerate(vics) if v.method == method]
        names = encoder_names(vics[group[0]].state)
        moved = [relative_distance(vics[i].state, cands[vics[i].base][2], names) for i in group]
        rows.append({"method": method, "victims": len(group),
                     "task accuracy": fmt(mean_ci(np.array([accuracy[i] for i in group]), m.ci_level, m.bootstrap, cfg.seed)),
                     "encoder moved ‖θ_victim − θ_base‖ / ‖θ_base‖": f"{np.mean(moved):.4f} (max {np.max(moved):.4f})"})
    text = [f"Task accuracy of the victims on the held-out blocks, mean over victims with a {m.ci_level:.0%} bootstrap CI "
            f"(chance {1 / cfg.stealing.classes:.0%}), and the relative distance of each fine-tuned encoder (LoRA merged) "
            "from the base it started at."]
    return Section("Victims", text, rows)


def identification_section(cfg: RunConfig, vics: list[Victim], arch_of: dict, arch_found: dict, probe: dict) -> Section:
    st, m = cfg.stealing, cfg.metrics
    ci = lambda hits: mean_ci(np.array(hits, dtype=np.float64), m.ci_level, m.bootstrap, cfg.seed)  # noqa: E731
    rows = [{"step": "architecture from latency", "queries": "profile", "victims": "all",
             "accuracy": fmt(ci([arch_found[v.index] == arch_of[v.base] for v in vics]))}]
    for n in st.id_budgets:
        for method in [*st.victim_methods, "all"]:
            group = [v for v in vics if method in ("all", v.method)]
            rows.append({"step": "base from outputs (probe)", "queries": n, "victims": f"{method} ({len(group)})",
                         "accuracy": fmt(ci([probe[(v.index, n)][0] == v.base for v in group]))})
        combined = [max((s for s in probe[(v.index, n)][1] if arch_of[s] == arch_found[v.index]),
                        key=probe[(v.index, n)][1].get, default=None) == v.base for v in vics]
        rows.append({"step": "latency, then probe among that architecture", "queries": n, "victims": f"all ({len(vics)})",
                     "accuracy": fmt(ci(combined))})
    grid = len(st.latency_lengths) * sum(b * (st.latency_repeats + 1) for b in st.latency_batches)
    text = [f"Accuracy of identification over {len(vics)} victims ({m.ci_level:.0%} bootstrap CI over victims). A latency "
            f"profile costs {grid} query rows (median of {st.latency_repeats} timed calls per (batch, length) cell, after a "
            "warm-up); it is compared with the profiles of the candidates' architectures run locally (same machine)."]
    return Section("Base identification", text, rows)
