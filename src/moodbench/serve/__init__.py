"""Starting model servers: llama.cpp on the CPU, vLLM on GPUs (and SkyPilot for rented ones)."""
