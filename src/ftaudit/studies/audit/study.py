"""The ``audit`` study: does a user's own fine-tuned model leak its fine-tuning records?

Every cheap check runs before any weights are loaded (``inputs.prepare``); then the model (and its
base) are loaded, every record is scored by every attack of its tier (``scoring.record_scores``),
and the headline goes to the pipeline as precomputed scores (one row per record, so the bootstrap
resamples records). The study adds ``records.csv``, the plain verdict, the counts and the gate
(``outputs``), and with a canary manifest the canaries' exposure and the one-run ε lower bound.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ftaudit.attacks.evaluators import precomputed
from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.evaluation import evaluate
from ftaudit.seeding import derive_seed
from ftaudit.studies.audit import outputs
from ftaudit.studies.audit import references as refs
from ftaudit.studies.audit.config import AuditConfig
from ftaudit.studies.audit.inputs import FLAGS, concat, load_models, prepare
from ftaudit.studies.audit.scoring import BASE_ATTACK, DESCRIPTIONS, context_limit, record_scores
from ftaudit.studies.base import Study, StudyOutput


def run(cfg: AuditConfig, ctx) -> StudyOutput:
    a = cfg.audit
    spec = {k: getattr(a, k) for k in FLAGS}
    if a.demo:
        from ftaudit.studies.audit.demo import build_demo

        with ctx.stage("demo"):
            spec.update(build_demo(Path(cfg.out) / "demo", cfg.seed))
    with ctx.stage("data"):
        inp = prepare(cfg, spec)
        checked = refs.check(cfg, inp) if a.references else None  # before any weights are read
    with ctx.stage("load"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "audit-load") % 2**31)  # any freshly initialised head: seeded
        target, base = load_models(cfg, inp)

    members, nonmembers = inp.members, inp.nonmembers
    records = concat(members, nonmembers)
    labels = np.concatenate([np.ones(len(members), bool), np.zeros(len(nonmembers), bool)])
    with ctx.stage("signals"):
        from ftaudit.studies.audit.demo import one_thread

        with one_thread() if a.demo else nullcontext():
            scores, truncated = record_scores(target, records, base, a.batch_size, a.max_length, seed=cfg.seed)
            canaries = _canaries(cfg, inp, target)
    with ctx.stage("regurgitation"), one_thread() if a.demo else nullcontext():
        regurg = _regurgitation(cfg, target, base, records, labels)
    ref_info = None
    if a.references:  # fine-tuning-aware references: LiRA / RMIA scores join the others
        ref_scores, ref_info = refs.reference_scores(ctx, cfg, target, base, records, checked)
        scores.update(ref_scores)

    pooled = PooledScores(scores, labels, np.arange(len(labels)), np.zeros(len(labels), dtype=np.int64))
    request = precomputed(pooled, {k: {**DESCRIPTIONS[target.task], **refs.DESCRIPTIONS}[k] for k in scores})
    summary = outputs.summary_of(evaluate(ctx.store.metrics, request, cfg.metrics, cfg.seed).attacks)
    primary = BASE_ATTACK[target.task] if BASE_ATTACK[target.task] in scores else "loss"
    counts = {**inp.counts, "truncated": truncated,
              "context_tokens": context_limit(target, base, a.max_length) if records.texts is not None else None}
    info = {"task": target.task, "model": target.source, "base": base.source if base is not None else None,
            "counts": counts, "resolvable_fpr": outputs.resolvable_fpr(len(nonmembers)), "reveal": a.reveal,
            "verdict": outputs.verdict(summary, primary, cfg.metrics.fprs, len(nonmembers), cfg.metrics.ci_level),
            "gate": outputs.evaluate_gate(summary, a.fail_above), "canaries": canaries, "references": ref_info,
            "regurgitation": regurg[0] if regurg else None}

    salt = outputs.new_salt()  # never stored: ids cannot be matched to texts without it
    keys = [outputs.record_key(records.texts, records.images, i) for i in range(len(records))]
    position = np.array([inp.where["member" if m else "nonmember"][k] for k, m in zip(keys, labels)])
    table = outputs.records_csv(scores, labels, position, [outputs.salted_id(salt, k) for k in keys],
                                records.labels, records.texts if a.reveal else None)
    if regurg:
        from ftaudit.studies.audit import regurgitation as rg

        table = rg.add_columns(table, regurg[1])
        notes_regurg, sections = rg.notes(regurg[0]), [rg.section(regurg[0])]
    else:
        notes_regurg, sections = [], []
    notes = (list(info["verdict"]["text"]) + _count_notes(counts, a.max_records) + _canary_notes(canaries)
             + refs.notes(ref_info) + notes_regurg)
    if info["gate"]:
        notes.append(info["gate"]["message"])
    models = [("target", 0, target.source, cfg.seed)] + ([("base", 0, base.source, cfg.seed)] if base is not None else [])
    return StudyOutput(
        title=f"Audit of {target.source} ({target.task}): {len(members)} members vs {len(nonmembers)} non-members",
        evaluation=request, member_rate=labels.astype(np.float64), utility=[],
        audit_arrays={"audit_y": records.labels} if records.labels is not None else {},
        models=models, seeds={"run": cfg.seed}, notes=notes, sections=[outputs.audit_section(info), *sections],
        files={"records.csv": table}, extra={"audit": info})


def _regurgitation(cfg: AuditConfig, target, base, records, labels) -> tuple[dict, dict] | None:
    """Regurgitation of the records (causal LMs; ``regurgitation``): (results, records.csv columns)."""
    from ftaudit.errors import UserError
    from ftaudit.studies.audit import regurgitation as rg

    a = cfg.audit
    if a.regurgitation is True and target.task != "causal-lm":
        raise UserError("audit.regurgitation", f"regurgitation prompts a causal LM; the model is a {target.task} model",
                        "set audit.regurgitation to auto or false")
    if not rg.enabled(a.regurgitation, target.task):
        return None
    return rg.run_audit(cfg, target, records, labels, context_limit(target, base, a.max_length))


def _canaries(cfg: AuditConfig, inp, target) -> dict | None:
    """Canary exposure and the one-run ε lower bound (ftaudit.empirical.canaries), with a manifest."""
    if inp.manifest is None:
        return None
    from ftaudit.empirical.canaries import canary_audit

    return canary_audit(target, None, inp.manifest, accounted_epsilon=cfg.audit.accounted_epsilon,
                        level=cfg.metrics.ci_level, batch_size=cfg.audit.batch_size)


def _canary_notes(c: dict | None) -> list[str]:
    if c is None:
        return []
    inc, exc = c["exposure"]["included"], c["exposure"]["excluded"]

    def bits(d):
        return "—" if d["value"] is None else f"{d['value']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"

    text = (f"Canaries: {c['included']} of {c['canaries']} were inserted (fair coins); mean exposure {bits(inc)} bits "
            f"inserted vs {bits(exc)} bits not inserted (max {c['exposure']['max']:.1f}; {c['references']} reference "
            f"secrets). One-run empirical ε ≥ {c['epsilon_lower_bound']:.3g} at {c['level']:.0%} confidence, "
            f"δ = {c['delta']:g} (Steinke, Nasr & Jagielski 2023)")
    if c["accounted_epsilon"] is not None:
        text += f"; accounted ε = {c['accounted_epsilon']:g}: " + ("consistent" if c["consistent"] else "INCONSISTENT")
    return [text + "."] + ([c["warning"]] if c.get("warning") else [])


def _count_notes(c: dict, max_records: int) -> list[str]:
    notes = []
    if c["member_duplicates"] or c["nonmember_duplicates"] or c["overlap"]:
        notes.append(f"Dropped {c['member_duplicates']} duplicate members, {c['nonmember_duplicates']} duplicate "
                     f"non-members and {c['overlap']} records present in both sets (from both).")
    if c.get("canary_records_dropped"):
        notes.append(f"Left {c['canary_records_dropped']} canary records of the manifest out of the membership audit "
                     "(they are audited as canaries).")
    for which in ("members", "nonmembers"):
        if c[f"{which}_unique"] > c[which]:
            notes.append(f"Audited a random {c[which]} of the {c[f'{which}_unique']} {which} (audit.max_records = "
                         f"{max_records}).")
    if c["truncated"]:
        notes.append(f"{c['truncated']} records were longer than {c['context_tokens']} tokens and were truncated to them.")
    return notes


STUDY = Study("audit", "audit your own fine-tuned model: membership of its fine-tuning records (model only, "
                       "+ base ratio, + canaries), records.csv, verdict, gate", AuditConfig, run)
