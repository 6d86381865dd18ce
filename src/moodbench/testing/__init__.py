"""Test doubles (a scripted OpenAI-compatible server) so moodbench can be exercised end to end without a real model."""
