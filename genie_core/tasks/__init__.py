"""What the commands call: tokenize/reconstruct (``tokenize``), latent actions for a video
(``infer_actions``), controllability (``evaluate``), the play session (``play``), the shipped
worlds (``worlds``), ``WorldEnv`` (``env``) and ``record``. Imports ``models``, ``io`` and the
top-level modules, never ``training``."""
