"""An audit finds the leak of a model fine-tuned on its members (base-ratio AUC CI above 0.5), and does
not raise a false alarm on a model that never saw them (every AUC CI covers 0.5): a tiny GPT-2, a tiny
BERT sequence classifier and a LoRA adapter, each fine-tuned by a plain PyTorch loop."""
import pytest

import ftaudit

FAST = {"metrics__bootstrap": 300}


def _audit(world, kind: str, which: str, tmp_path):
    if kind == "gpt":
        model = getattr(world, f"gpt_{which}")
        return ftaudit.audit(model, world.members, world.nonmembers, base=world.gpt_base, out=tmp_path, **FAST)
    if kind == "bert":
        model = getattr(world, f"bert_{which}")
        return ftaudit.audit(model, world.members_jsonl, world.nonmembers_jsonl, base=world.bert_base, out=tmp_path,
                             **FAST)
    # an adapter directory: the base comes from adapter_config.json, the ratio from switching the adapter off
    return ftaudit.audit(getattr(world, f"lora_{which}"), world.members, world.nonmembers, out=tmp_path, **FAST)


RATIO = {"gpt": "lm-ratio", "bert": "reference", "lora": "lm-ratio"}


@pytest.mark.parametrize("kind", ["gpt", "bert", "lora"])
def test_fine_tuned_model_leaks_and_unseen_model_does_not(world, kind, tmp_path):
    leaky = _audit(world, kind, "model", tmp_path)
    aucs = {a["name"]: a["auc"] for a in leaky.results["attacks"]}
    print(kind, "fine-tuned on the members:", {k: round(v["value"], 3) for k, v in aucs.items()})
    assert aucs[RATIO[kind]]["lo"] > 0.5, aucs
    verdict = leaky.results["audit"]["verdict"]
    assert verdict["attack"] == RATIO[kind]  # declared before the scores: the base ratio
    # 40 non-members resolve FPRs down to 10/40 = 25 % (report.resolution): no reported FPR, so the
    # verdict rests on the AUC and says why
    assert verdict["resolvable_fpr"] == pytest.approx(10 / 40) and verdict["fpr"] is None and verdict["tpr"] is None
    assert any("no reported FPR is resolvable" in line for line in verdict["text"])
    assert verdict["above_chance"] is True
    assert leaky.results["audit"]["counts"]["members"] == 40

    clean = _audit(world, kind, "unseen", tmp_path)
    aucs = {a["name"]: a["auc"] for a in clean.results["attacks"]}
    print(kind, "never saw them:", {k: (round(v["lo"], 3), round(v["hi"], 3)) for k, v in aucs.items()})
    assert set(aucs) == {a["name"] for a in leaky.results["attacks"]}
    assert all(v["lo"] <= 0.5 <= v["hi"] for v in aucs.values()), aucs
