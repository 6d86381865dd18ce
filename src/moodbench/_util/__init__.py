"""Private plumbing shared by moodbench's packages (paths, console, files, processes, secrets)."""
