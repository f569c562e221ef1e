"""Exports of a finished run to other tools: an MLflow run (:mod:`ftaudit.export.mlflow`), and a cached
model as a Hugging Face ``save_pretrained`` / peft adapter directory (:mod:`ftaudit.export.model`).

Both only read the store; mlflow is an optional extra, imported when an export asks for it.
"""
