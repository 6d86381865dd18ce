"""Defaults shared by the model layer, the run configuration and the probe (one home for each number).

Kept in a dependency-free module: the CLI builds its options from the run configuration at start-up
and must not pay for importing the model layer (litellm) to learn a default.
"""

from typing import Literal, get_args

MAX_TOKENS = 2048  # sent with every request: server defaults (vLLM's 16) truncate replies
TIMEOUT_S = 120.0  # whole-request deadline per model call
MAX_RETRIES = 4  # retries per model call on 429/5xx/timeouts
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # generous; an endless or 150 MB reply must not fill memory
MAX_STEPS = 100  # tau2's default
MAX_ERRORS = 10  # tau2's default
MAX_CONSECUTIVE_FAILURES = 25  # failed requests in a row before an endpoint counts as down
CONCURRENCY = 4
STOP_GRACE_S = 25.0  # schedulers send SIGKILL 30 s after SIGTERM (Slurm, Kubernetes defaults)
SEED = 300
# how the customer model sees the conversation (see sim._user); the type and its values, one home
UserFormat = Literal["tau2", "transcript", "completion"]
USER_FORMATS: tuple[UserFormat, ...] = get_args(UserFormat)
MAX_TRIALS = 1000  # trials per task and variant: pass^k tables have a column per k
MAX_SEED = 2**31 - 1_000_001  # per-cell seeds add up to 999,999 and must stay a 32-bit int for every server
MAX_CELLS = 1_000_000  # conversations in one plan: a bigger matrix is a typo, and would not fit in memory
#: Vector scales a steering calibration tries; 0 is the unsteered baseline (planning: coherence collapses past ~2).
STEER_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Real tau2 tasks a calibration's customers play, whose customers need the agent to act (so every early stop
#: is premature): four different customers (retail tasks 0-4 all share one), one calling to complain (airline:5).
STEER_TASKS: tuple[str, ...] = ("retail:0", "retail:5", "retail:10", "airline:5")
