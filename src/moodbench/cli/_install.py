"""``moodbench install-backend``: build llama.cpp's ``llama-server`` and ``llama-cvector-generator``
(portable, cached) and fetch a verified model; ``scripts/install-local-backend.sh`` wraps it.

The work is :func:`moodbench.serve.install.install_local_backend`; this module only parses flags,
prints the installed paths and maps a failed build to exit code 1 (``--check``: 1 when missing).
"""

from __future__ import annotations

import sys

import typer

from moodbench.cli._app import app
from moodbench.cli._exit import ExitCode
from moodbench.serve.models import DEFAULT_MODEL, MODELS, ModelResolutionError


@app.command("install-backend")
def install_backend(
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached build exists."),
    with_python: bool = typer.Option(False, "--with-python", help="Also install the llama-cpp-python binding."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=f"Model to fetch and verify ({', '.join(MODELS)})."),
    no_model: bool = typer.Option(False, "--no-model", help="Do not fetch a model."),
    check: bool = typer.Option(False, "--check", help="Only report whether the backend is installed."),
) -> None:
    """Build the local llama.cpp backend once (portable, cached, with a progress bar) and fetch a model."""
    from moodbench.serve.install import (
        INSTALL_HINT,
        cached_generator_binary,
        find_cvector_generator,
        find_llama_server,
        install_local_backend,
    )

    if check:
        p, g = find_llama_server(), find_cvector_generator()
        print(p if p else f"llama-server not installed; run {INSTALL_HINT}")
        print(g if g else f"llama-cvector-generator not installed; run {INSTALL_HINT}")
        raise typer.Exit(ExitCode.OK if p and g else ExitCode.FAILED)
    try:
        server = install_local_backend(force=force, with_python=with_python, model=None if no_model else model)
    except (RuntimeError, ModelResolutionError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(ExitCode.FAILED) from None
    print(f"llama-server: {server}")
    print(f"llama-cvector-generator: {cached_generator_binary()}")
