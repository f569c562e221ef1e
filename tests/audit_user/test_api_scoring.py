"""`ftaudit.audit(...)` with in-memory models and lists, duplicate/overlap counts, and the scoring
building blocks the Trainer callback shares (record_scores, attack_summary)."""
import numpy as np
import pytest
import torch

import ftaudit


def test_in_memory_model_and_lists_with_duplicates(world, tmp_path):
    import ftaudit.empirical.epsilon  # noqa: F401  (the empirical-ε package no longer shares the name `audit`)

    members = world.members_list + world.members_list[:2]  # 2 duplicates
    nonmembers = world.nonmembers_list + world.members_list[-3:]  # 3 records in both sets: dropped from both
    res = ftaudit.audit(model=world.gpt_unseen_obj, tokenizer=world.tok, members=members, nonmembers=nonmembers,
                        out=tmp_path, metrics__bootstrap=50, max_records=30, seed=3)
    counts = res.results["audit"]["counts"]
    assert counts["member_duplicates"] == 2 and counts["overlap"] == 3 and counts["nonmember_duplicates"] == 0
    assert counts["members_unique"] == 37 and counts["nonmembers_unique"] == 40
    assert counts["members"] == counts["nonmembers"] == 30  # max_records: a random subset of each
    notes = " ".join(res.results["notes"])
    assert "Dropped 2 duplicate members" in notes and "3 records present in both sets" in notes
    assert "Audited a random 30 of the 37 members" in notes
    assert res.results["config"]["audit"]["model"].startswith("memory:")
    assert res.results["audit"]["model"].startswith("in-memory GPT2LMHeadModel")
    assert (res.path / "records.csv").is_file() and res.metrics[0]["attack"] == "loss"


def test_attack_summary_equals_the_pipeline(world, tmp_path):
    from ftaudit.studies.audit.scoring import attack_summary

    res = ftaudit.audit(world.gpt_model, world.members, world.nonmembers, out=tmp_path, metrics__bootstrap=80, seed=5)
    labels = np.load(res.path / "arrays" / "labels.npy")
    scores = {a["name"]: np.load(res.path / "arrays" / f"scores-{a['name']}.npy") for a in res.results["attacks"]}
    ours = attack_summary(scores, labels, fprs=[0.001, 0.01, 0.1], n_boot=80, level=0.95, seed=5)
    for a in res.results["attacks"]:
        assert ours[a["name"]]["auc"] == pytest.approx((a["auc"]["value"], a["auc"]["lo"], a["auc"]["hi"]))
        t = next(t for t in a["tpr_at_fpr"] if t["fpr"] == 0.01)
        assert ours[a["name"]]["tpr@0.01"] == pytest.approx((t["value"], t["lo"], t["hi"]))


def test_record_scores_batches_do_not_change_scores_and_masked_lm(world):
    """Padding and batching never change a record's score; a masked LM gets its loss and base ratio."""
    from transformers import BertConfig, BertForMaskedLM

    from audit_user_world import BERT
    from ftaudit.data.records import load_records
    from ftaudit.models.load import load_model
    from ftaudit.studies.audit.scoring import record_scores

    records = load_records(world.members_list[:12], "members")
    gpt = load_model(world.gpt_model, device="cpu")
    one, _ = record_scores(gpt, records, batch_size=1)
    many, truncated = record_scores(gpt, records, batch_size=5)
    assert truncated == 0
    for name in one:
        np.testing.assert_allclose(one[name], many[name], rtol=1e-6, atol=1e-8)
    short, truncated = record_scores(gpt, records, batch_size=4, max_length=8)
    assert truncated == sum(len(world.tok(t)["input_ids"]) > 8 for t in world.members_list[:12]) > 0

    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(world.tok), pad_token_id=0, **BERT)).eval()
    torch.manual_seed(1)
    mlm_base = BertForMaskedLM(BertConfig(vocab_size=len(world.tok), pad_token_id=0, **BERT)).eval()
    target = load_model(mlm, tokenizer=world.tok, device=None)
    base = load_model(mlm_base, tokenizer=world.tok, device=None)
    scores, _ = record_scores(target, records, base, batch_size=8, seed=0)
    again, _ = record_scores(target, records, base, batch_size=8, seed=0)
    assert set(scores) == {"loss", "mlm-ratio"} and all(np.isfinite(v).all() for v in scores.values())
    np.testing.assert_array_equal(scores["loss"], again["loss"])  # seeded maskings


def test_canary_manifest_is_audited_and_its_records_left_out(world, tmp_path):
    """--manifest adds canary exposure and the one-run bound; canary records are not membership records."""
    from audit_user_world import write_txt

    from ftaudit.empirical.canaries import inject

    records, manifest = inject(world.members_list, n=8, seed=0, manifest=tmp_path / "canaries.json")
    members = write_txt(tmp_path / "members-with-canaries.txt", records)
    res = ftaudit.audit(world.gpt_model, members, world.nonmembers, out=tmp_path, metrics__bootstrap=50,
                        manifest=str(tmp_path / "canaries.json"), accounted_epsilon=8.0)
    audit = res.results["audit"]
    included = sum(c["included"] for c in manifest["canaries"])
    assert audit["counts"]["canary_records_dropped"] == included and audit["counts"]["members"] == 40
    assert audit["canaries"]["canaries"] == 8 and audit["canaries"]["included"] == included
    assert audit["canaries"]["accounted_epsilon"] == 8.0
    assert any("One-run empirical ε" in n for n in res.results["notes"])


def test_image_classifier_scores(tmp_path):
    """An image classifier (.npz records): loss and confidence of the true label, a base's reference."""
    from transformers import ViTConfig, ViTForImageClassification

    from ftaudit.data.records import load_records
    from ftaudit.models.load import load_model
    from ftaudit.studies.audit.scoring import record_scores

    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    target = load_model(ViTForImageClassification(config).eval(), device=None)
    torch.manual_seed(1)
    base = load_model(ViTForImageClassification(config).eval(), device=None)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x=rng.random((10, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 10))
    records = load_records(str(tmp_path / "images.npz"), "--members", need_labels=True)
    scores, truncated = record_scores(target, records, base, batch_size=4)
    assert target.task == "image-classification" and truncated == 0
    assert set(scores) == {"loss", "conf", "reference"} and all(v.shape == (10,) for v in scores.values())
