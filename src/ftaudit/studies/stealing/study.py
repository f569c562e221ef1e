"""``stealing``: model extraction of a fine-tuned BERT classifier served as a black box.

Following "Revealing Secrets From Pre-trained Models": fine-tuned weights stay close to the public
base they started from, so an attacker who can tell *which* base a victim came from can estimate its
weights from there. Here, with what an API user can measure (answers and latency):

1. candidates — tiny BERT bases of several sizes, seeds and pretraining corpora, pretrained by the
   engine and stored as HF directories; victims — classifiers fine-tuned from each (full, LoRA, head)
   on a topic task (which article a block comes from), served by :class:`BlackBox`;
2. identification — the architecture from latency profiles (``latency.py``, timed by the attacker
   around ``query()``), the checkpoint from outputs (a linear probe on each candidate's features,
   ``identify.py``), over every victim and several query budgets; scored as detection over
   (victim, candidate) pairs by the ``base-identification`` evaluator (``attacks/identify.py``),
   clustered by victim;
3. weight estimation — distil the victim from its answers starting from the identified base, vs from
   random init and from a wrong base of the same architecture: agreement, accuracy, distance to the
   victim's weights, over query budgets;
4. pruning — train only the top p % of encoder elements, ranked by the consistency (SNR) or the size
   (Fisher) of the distillation-loss gradients (``pruning.py``).

Inputs are ``stealing.block_len`` tokens with [CLS] first; the classifiers pool the mean hidden state
(``models/lm.MeanPooler``) because MLM-only tiny bases carry nothing a head can read at [CLS].
Modules: ``candidates`` (tokenizer, bases, task, queries), ``victims``, ``identification``,
``distill`` (weight estimation and pruning), ``report`` (the sections), ``config``.
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.evaluators import EvaluationRequest
from ftaudit.attacks.identify import DESCRIPTIONS, member_rate
from ftaudit.evaluation import evaluate
from ftaudit.metrics import mean_ci
from ftaudit.seeding import derive_seed
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.lm.base import lm_threads
from ftaudit.studies.stealing import report
from ftaudit.studies.stealing.candidates import candidate_bases, query_pool, task_data, tokenizer
from ftaudit.studies.stealing.config import StealingStudyConfig
from ftaudit.studies.stealing.distill import weight_estimation
from ftaudit.studies.stealing.identification import identify_victims
from ftaudit.studies.stealing.victims import train_victims


def run(cfg: StealingStudyConfig, ctx: Context) -> StudyOutput:
    st = cfg.stealing
    seeds = {"run": cfg.seed, "task": derive_seed(cfg.seed, "task"), "queries": derive_seed(cfg.seed, "queries"),
             "latency": derive_seed(cfg.seed, "latency")}
    with lm_threads(cfg):
        with ctx.stage("data"):
            tok = tokenizer(ctx, st)
            train_set, test_set = task_data(st, tok, seeds["task"])
            pool = query_pool(st, tok, max(max(st.budgets), max(st.id_budgets)), seeds["queries"])
        with ctx.stage("pretrain"):
            cands = candidate_bases(ctx, cfg, tok)
        with ctx.stage("finetune"):
            vics = train_victims(ctx, cfg, cands, train_set, test_set)
        with ctx.stage("identification"):
            ident = identify_victims(st, cands, vics, pool, seeds["latency"], ctx.cached)
        with ctx.stage("distillation"):
            estimates = weight_estimation(ctx, cfg, cands, vics, ident, pool, test_set)

    n_big = max(st.id_budgets)
    request = EvaluationRequest("base-identification", ident.inputs(cands, vics, n_big),
                                {**DESCRIPTIONS, "probe-fit": f"{DESCRIPTIONS['probe-fit']} ({n_big} queries)"})
    with ctx.stage("attacks"):
        ev = evaluate(ctx.store.metrics, request, cfg.metrics, cfg.seed)  # the pipeline reuses the memoized scores
    victim_acc = [float((v.test_pred == test_set.y).mean()) for v in vics]
    sections = [report.setup_section(cfg, cands, vics, train_set, test_set),
                report.victims_section(cfg, cands, vics, victim_acc),
                report.identification_section(cfg, cands, vics, ident),
                report.detection_section(ev, len(vics), len(cands), n_big),
                report.estimation_section(cfg, estimates), report.pruning_section(cfg, estimates)]
    utility = [{**mean_ci(np.array(victim_acc), cfg.metrics.ci_level, cfg.metrics.bootstrap, cfg.seed),
                "name": "victims' task accuracy", "note": f"mean over {len(vics)} victims on {len(test_set.y)} held-out blocks"}]
    return StudyOutput(
        title="Model extraction of fine-tuned tiny BERT classifiers: base identification, weight estimation, pruning",
        evaluation=request, member_rate=member_rate(request.scores()), utility=utility,
        audit_arrays={"test_x": test_set.x, "test_y": test_set.y},
        models=[("victim", v.index, v.key, v.seed) for v in vics], seeds=seeds, sections=sections,
        notes=[f"Identification rows are (victim, candidate) pairs clustered by victim: the 'examples' of this run "
               f"are the {len(vics)} victims (example i = victim i), and every CI resamples victims. Latency is "
               f"{report.LATENCY_CHANNEL}."])


STUDY = Study("stealing", "model extraction of fine-tuned BERT classifiers through their API: base identification "
                          "(latency, outputs), weight estimation by distillation from the base, Fisher pruning",
              StealingStudyConfig, run)
