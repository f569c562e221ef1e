"""Defaults shared by the config schema and the CLI, in a module light enough for the CLI to import at
start-up (ftaudit.config pulls in pydantic)."""

DEFAULT_STORE = "ftaudit-runs"  # the store directory when neither out= nor --out says otherwise
