"""Whether tau2's and litellm's own logs are shown: off unless a caller asks (``moodbench -v``).

tau2 logs through loguru (a JSON dump of its registry at import, a warning about a missing ``.env``, conversation
content while it runs) and litellm through the standard ``logging`` loggers ``LiteLLM*`` (warnings, and debug
output when ``LITELLM_LOG`` asks). Neither belongs on a moodbench user's terminal unless asked for. The choice is
an argument: the CLI passes its ``-v`` here, :func:`moodbench.experiment.run` takes ``library_logs`` and hands it
to every worker process explicitly. Nothing reads an environment variable.

The modules that import tau2 or litellm (``sim._quiet``, ``llm._litellm``) call :func:`quiet_unless_shown` first,
so the default holds wherever they are imported (CLI, workers, tests); the one fact kept here is whether a caller
has already asked to show the logs, so that a later first import of those modules does not undo the request. The
loggers themselves are process-wide (loguru's per-library switch, ``logging``'s named loggers): that is their API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["LITELLM_LOGGERS", "library_logs", "quiet_unless_shown"]

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
_QUIET = logging.CRITICAL + 1  # above every level litellm logs at

_shown = False  # set only by library_logs(): the caller's explicit choice, never read from the environment


def library_logs(show: bool, secret_env: Iterable[str] = ()) -> None:
    """Show (``True``: tau2's loguru output and litellm's loggers as litellm configures them, ``LITELLM_LOG``
    included) or hide (``False``) what tau2 and litellm log, in this process. Cheap: imports neither.

    Shown, tau2's lines carry conversation content, so they are masked like everything else moodbench shows
    (:func:`moodbench._util.secrets.mask`: credential-looking variables' values, the variables named in
    ``secret_env`` such as ``--api-key-env``'s, URL credentials); litellm masks its own logs."""
    global _shown
    _shown = show
    _apply(show)
    if show:
        _mask_tau2(secret_env)


def _mask_tau2(secret_env: Iterable[str]) -> None:
    from loguru import logger

    from moodbench._util.secrets import mask, secret_values

    secrets = secret_values(secret_env)

    def patch(record: Any) -> None:
        record["message"] = mask(record["message"], secrets)

    logger.configure(patcher=patch)


def quiet_unless_shown() -> None:
    """The default, applied on import of the modules that import tau2 or litellm: quiet, unless
    :func:`library_logs` was asked to show them earlier in this process."""
    _apply(_shown)


def _apply(show: bool) -> None:
    from loguru import logger

    if show:
        logger.enable("tau2")
    else:
        logger.disable("tau2")
    for name in LITELLM_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if show else _QUIET)
