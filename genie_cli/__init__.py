"""The ``genie`` command line: a thin Typer layer over ``genie_core``."""
