"""What every import of tau2 (and of litellm through it) must find already set: quiet and offline.

tau2's registry logs a JSON dump of itself at import, ``tau2.utils`` warns about a missing ``.env``
file, and litellm fetches a remote cost map for ~10 s when offline. The package's ``__init__`` runs
this module before any of its tau2-importing modules, so those side effects are off everywhere (CLI,
workers, tests) without touching tau2 itself. It imports neither tau2 nor litellm: it is cheap.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from loguru import logger as _loguru

# loguru's per-library switch: tau2's own logging stays silent unless MOODBENCH_TAU2_LOGS=1.
if os.environ.get("MOODBENCH_TAU2_LOGS") != "1":
    _loguru.disable("tau2")
