"""Starting model servers: llama.cpp on the CPU, vLLM on GPUs (and SkyPilot for rented ones).

The package builds, starts, probes, records and stops servers and raises typed errors; it prints for
no command (the foreground ``moodbench serve`` and ``moodbench install-backend`` live in
:mod:`moodbench.cli`). Its public surface is these modules, each with its own ``__all__`` (not
re-exported here: ``moodbench --help`` imports :mod:`.options` and must not pay for httpx or YAML):

* :mod:`.options` - :class:`~.options.ServeOptions`, the options of ``moodbench serve`` (its flags show these defaults);
* :mod:`.install` - building llama.cpp's ``llama-server`` and ``llama-cvector-generator``, finding them
  (``LocalBackendMissing``, a usage error: exit 2 in every command);
* :mod:`.models` - the built-in GGUF models, fetched and verified (``resolve_model``);
* :mod:`.llamacpp` - ``LlamaCppServer`` (its forced-call grammar and HTTP front are private modules);
* :mod:`.vllm` and :mod:`.parsers` - vLLM commands, replicas, their records, the parser table;
* :mod:`.skypilot` - the SkyPilot task for a rented GPU;
* :mod:`.health` - ``/v1/models`` probes and readiness waits.
"""

__all__ = ["health", "install", "llamacpp", "models", "options", "parsers", "skypilot", "vllm"]
