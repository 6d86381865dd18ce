"""What every import of tau2 (and of litellm through it) must find already set: quiet and offline.

tau2's registry logs a JSON dump of itself at import, ``tau2.utils`` warns about a missing ``.env``
file, and litellm fetches a remote cost map for ~10 s when offline. The package's ``__init__`` runs
this module before any of its tau2-importing modules, so those side effects are off everywhere (CLI,
workers, tests) without touching tau2 itself. It imports neither tau2 nor litellm: it is cheap.

The logs are shown only when a caller asks (``moodbench -v``; :func:`moodbench._util.liblogs.library_logs`).
``LITELLM_LOCAL_MODEL_COST_MAP`` is litellm's only switch for its import-time fetch, read when litellm is
imported, so it is given a default here (a user's own setting wins).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from moodbench._util.liblogs import quiet_unless_shown

quiet_unless_shown()
