"""Steering the simulated customer's emotion with llama.cpp control vectors, instead of prompting it.

Why: a small customer model told "you are frustrated" mostly does not sound frustrated (0 marker words
in 168 messages of a measured run); a control vector added to its hidden states does change its tone.

* :func:`build_vector` writes the control vector of an emotion for a model (``llama-cvector-generator``
  on the variant's ``steering:`` pairs, rendered with the model's own chat template), cached.
* :func:`calibrate` sweeps vector scales (one ``llama-server`` each) against fixed agent turns of real
  tau2 tasks, measures the manipulation (VADER, marker words) and the coherence (fidelity checks,
  perplexity under the unsteered model, repetition, goal overlap), and maps mild/moderate/severe to
  the strongest coherent scales.
* :func:`render_completion_prompt` renders the ``completion`` customer format (a plain transcript
  continued through ``/v1/completions``), which keeps small models in the customer role.

A steered server serves one variant: start one :class:`moodbench.serve.llamacpp.LlamaCppServer` per
steered variant with ``control_vectors=[(vector.vector, scale)]`` and ``control_vector_layers=vector.layers``.
"""

from moodbench._util.defaults import STEER_SCALES as DEFAULT_SCALES
from moodbench._util.defaults import STEER_TASKS as DEFAULT_TASKS
from moodbench.emotions import SteeringData, SteeringPair
from moodbench.sim._completion import STOP, clean_completion_reply, render_completion_prompt
from moodbench.steer._calibrate import (
    THRESHOLDS,
    Calibration,
    calibrate,
    calibration_path,
    choose_levels,
    load_calibration,
    shipped_calibration,
)
from moodbench.steer._contrast import contrast_prompts, escape_line, pairs_sha256
from moodbench.steer._errors import SteeringError, SteeringInputError, SteeringRunError
from moodbench.steer._formats import compare_formats
from moodbench.steer._template import ChatTemplate, ChatTemplateError
from moodbench.steer._vector import METHODS, SteeringVector, build_vector, default_layers, steering_for, vectors_dir

__all__ = [
    "DEFAULT_SCALES",
    "DEFAULT_TASKS",
    "METHODS",
    "STOP",
    "THRESHOLDS",
    "Calibration",
    "ChatTemplate",
    "ChatTemplateError",
    "SteeringData",
    "SteeringError",
    "SteeringInputError",
    "SteeringPair",
    "SteeringRunError",
    "SteeringVector",
    "build_vector",
    "calibrate",
    "calibration_path",
    "choose_levels",
    "clean_completion_reply",
    "compare_formats",
    "contrast_prompts",
    "default_layers",
    "escape_line",
    "load_calibration",
    "shipped_calibration",
    "pairs_sha256",
    "render_completion_prompt",
    "steering_for",
    "vectors_dir",
]
