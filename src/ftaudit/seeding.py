"""One run seed; every job's seed derives from it and the job's name, and both are recorded."""
from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *labels: object) -> int:
    text = "/".join([str(run_seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")
