"""The training loop (``train``), its optimiser, distributed helpers, the frame cache and clip
sampling (``data``, ``cache_folders``), ``--resume`` checks and one stage per model (``stages``).
Imports ``models``, ``io`` and the top-level modules."""
