"""Shared option aliases (Annotated), so every command spells them the same way. An option whose
help differs per command (what --world or --json means there) takes its flags from one of the
``*_option(help)`` factories below, so only the help is the command's own."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import typer


def world_option(help: str) -> Any:
    return typer.Option("--world", "-w", help=help)


def preset_option(help: str) -> Any:
    return typer.Option("--preset", "-p", help=help)


def json_option(help: str) -> Any:
    return typer.Option("--json", help=help)


def size_option(help: str) -> Any:
    return typer.Option("--size", help=help)


def window_option(help: str, min: int = 1) -> Any:
    return typer.Option("--window", help=help, min=min)


DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def device_choice(value: str) -> str:
    """Option callback: --device is auto, cpu, cuda or cuda:N (a device index is not a fixed set,
    so this is a pattern, checked before any work; whether the device exists is checked when it
    is opened)."""
    if not re.fullmatch(DEVICE_PATTERN, value):
        raise typer.BadParameter(f"'{value}' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'.")
    return value


Device = Annotated[str, typer.Option(
    "--device", metavar="<auto|cpu|cuda|cuda:N>", help="auto (CUDA when present), cpu, cuda or cuda:N.",
    callback=device_choice)]
# Fixed sets of values as Literal types: Typer lists them in --help and refuses any other value
# at parse time (one line `error: ...`, exit 2, through the app's error handler).
PrecisionName = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
_AUTO = "auto (bf16 where the device has bf16 matmuls in hardware, else fp32), bf16 (autocast) or fp32"
Precision = Annotated[PrecisionName, typer.Option("--precision", help=_AUTO + ".")]
OptionalPrecision = Annotated[Optional[PrecisionName], typer.Option(
    "--precision", help=_AUTO + " (default: the preset's).")]
Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="A checkpoint (.safetensors).")]
Preset = Annotated[str, preset_option("Preset name (see presets/) or a YAML file.")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", help="Override a preset value: section.key=value (repeatable).")]
Json = Annotated[bool, json_option("Print one JSON line per file on stdout.")]
JsonResult = Annotated[bool, json_option("Print the result as one JSON line.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.", min=0, max=2 ** 63 - 1)]
THREADS_HELP = "CPU threads for torch (0: torch's default)."
# One rule for --threads in every command: an integer >= 0.
Threads = Annotated[int, typer.Option("--threads", help=THREADS_HELP, min=0)]
OneThread = Annotated[int, typer.Option(
    "--threads", help=THREADS_HELP + " One by default: on a shared 2-core machine two threads ran "
    "many times slower than one (bench/bench_play.py).", min=0)]
OptionalThreads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for torch (0: torch's default; default: the preset's).", min=0)]


def finite(value: Optional[float]) -> Optional[float]:
    """Option callback: refuse nan and inf (a range check lets nan through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def fraction(value: Optional[float]) -> Optional[float]:
    """Option callback: a fraction in (0, 1] (a range check would let 0 and nan through)."""
    if value is not None and not 0 < value <= 1:  # also refuses nan
        raise typer.BadParameter(f"must be in (0, 1], got {value}")
    return value


Temperature = Annotated[Optional[float], typer.Option(
    "--temperature", help="Sampling temperature on the logits; 0 is greedy (default: the world's).",
    min=0.0, callback=finite)]
UnmaskName = Literal["confidence", "random"]
Unmask = Annotated[Optional[UnmaskName], typer.Option(
    "--unmask", help="MaskGIT: keep the most confident sampled tokens each round, or a random "
    "subset (default: the world's).")]
TopP = Annotated[Optional[float], typer.Option(
    "--top-p", help="Nucleus sampling: draw each token only from its most likely ids whose "
    "probabilities add up to this; 1: the whole distribution (default: the world's).",
    callback=fraction)]
KeepBias = Annotated[Optional[float], typer.Option(
    "--keep-bias", help="Added to the logit of each token's id in the previous frame: a prior "
    "that the world stays as it is where the model is unsure; 0: none (default: the world's).",
    callback=finite)]
RenderName = Literal["tokens", "replenish"]
Render = Annotated[Optional[RenderName], typer.Option(
    "--render", help="tokens: each frame is its ids decoded; replenish: token patches whose id "
    "did not change keep the previous frame's pixels, so the prompt's real pixels stay until the "
    "world changes them (default: the world's).")]
OptionalPreset = Annotated[Optional[str], preset_option(
    "Without --checkpoint: build an UNTRAINED tokenizer from this preset "
    "(for smoke tests; its tokens mean nothing).")]
Size = Annotated[Optional[str], size_option(
    "Frame size HxW the video is fitted to (centre crop, then resize). "
    "Default: the size the tokenizer was trained at.")]
Window = Annotated[Optional[int], window_option(
    "Frames per window (after a warm-up of the earlier frames the encoder "
    "sees, so the ids equal a continuous encoding); a long video is never read whole. "
    "Default: the training clip length.")]
BatchWindows = Annotated[int, typer.Option("--batch", help="Windows per forward pass.", min=1)]
WORLD_HELP = ("A world: a shipped world's name (genie play --list) or a world file "
              "(RUN/world.safetensors from `genie train --stage all`).")
World = Annotated[Optional[str], world_option(WORLD_HELP)]
