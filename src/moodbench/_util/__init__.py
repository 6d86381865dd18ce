"""Small dependency-free helpers shared by every layer of moodbench (standard library only)."""
