"""The worlds shipped with genie (package data): see genie_core.tasks.worlds and manifest.json."""
