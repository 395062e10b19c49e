"""Files in and out: video reading and writing (ffmpeg), frame conversion, pictures, token and
action files, the checkpoint file format, atomic writes and the outputs guard. Knows no model:
imports only the top-level modules (``config``, ``errors``, ``runtime``, ``version``)."""
