"""The worlds shipped with genie (package data): see genie_core.worlds and manifest.json."""
