"""What a training run prints, once (rank zero under DDP), and the library noise it keeps out.

A run prints the composed config as a compact tree at its start, then the dataset report and the
model, and at its end the final metrics, the run folder and the TensorBoard command for it. The same
lines go to the run's log file (train.log) through the logger ``petloc.console``. Messages a user
cannot act on are silenced: Lightning's advertising tips and the deprecation warnings that the pinned
libraries raise against each other.
"""

from __future__ import annotations

import logging
import shlex
import textwrap
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

# Lightning's own warnings about torch's pytree API: nothing in petloc's code or config to change.
_DEPENDENCY_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
# Where Lightning logs its informational messages, the "💡 Tip: ..." advertisements among them.
_LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
# The console's lines as log records: Hydra's job logging (conf/hydra/job_logging/petloc.yaml) writes
# them to the job's log file only, since say() prints them.
_log = logging.getLogger(__name__)
# Keys of a config node that only steer Hydra's instantiation.
_INSTANTIATION_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def _not_a_tip(record: logging.LogRecord) -> bool:
    """Logging filter: drops Lightning's tips (for services and packages petloc does not use)."""
    return not record.getMessage().startswith("💡 Tip")


def silence_library_noise() -> None:
    """Drop the messages a user cannot act on (idempotent: a filter already in place stays one)."""
    for message in _DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger(_LIGHTNING_INFO_LOGGER).addFilter(_not_a_tip)


def _scalar(value: Any) -> str:
    """A leaf as YAML writes it: null, true/false, numbers and strings bare, lists in brackets."""
    if value is None:
        return "null"
    if value == "":
        return "''"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):  # a node to instantiate inside a list (trainer.plugins): its class
        target = value.get("_target_")
        return str(target).rsplit(".", 1)[-1] if target else "{" + ", ".join(map(str, value)) + "}"
    return str(value)


def _leaf(node: DictConfig, key: str) -> str | None:
    """``key``'s value to show, or None when it is a node of its own (shown as a branch).

    An interpolation shows its value; one that stands for a whole node (``data.augment: ${augment}``)
    shows the reference, so that the node is printed once, where it is defined.
    """
    raw = OmegaConf.to_container(node, resolve=False)[key]  # type: ignore[index]
    is_interpolation = OmegaConf.is_interpolation(node, key)
    if isinstance(raw, dict) and raw and not is_interpolation:
        return None
    value = node[key]
    if isinstance(value, DictConfig | ListConfig):
        if is_interpolation:
            return str(raw)
        value = OmegaConf.to_container(value, resolve=True)
    return _scalar(value)


def _branch(node: DictConfig, name: str | None, depth: int, width: int, lines: list[str]) -> None:
    indent = "  " * depth
    leaves = [(k, _leaf(node, str(k))) for k in node if str(k) not in _INSTANTIATION_KEYS]
    target = node.get("_target_") if "_target_" in node else None
    words = ([str(target).rsplit(".", 1)[-1]] if target else []) + [
        f"{k}={v}" for k, v in leaves if v is not None
    ]
    head = f"{indent}{name}:" if name is not None else indent.rstrip()
    text = " ".join(words)
    if text or name is not None:
        lines.append(
            textwrap.fill(
                text,
                width=width,
                initial_indent=head + (" " if head and text else ""),
                subsequent_indent=indent + "    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
            if text
            else head
        )
    for key, value in leaves:
        if value is None:
            _branch(node[key], str(key), depth + 1, width, lines)


def config_tree(cfg: DictConfig, width: int = 110) -> str:
    """The composed config in a few lines: a node's leaves as ``key=value`` on its line (wrapped at
    ``width``), its nodes as indented branches; classes to instantiate shown by their name."""
    lines: list[str] = []
    _branch(cfg, None, 0, width, lines)
    return "\n".join(line for line in lines if line)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, else absolute; quoted for a shell."""
    path = path.resolve()
    cwd = Path.cwd().resolve()
    return shlex.quote(str(path.relative_to(cwd) if path.is_relative_to(cwd) else path))


@rank_zero_only
def say(text: str) -> None:
    """Print ``text`` and log it to ``petloc.console``, on rank zero only (under DDP every rank runs
    the training function).

    Printed rather than logged to the terminal, so the terminal shows the lines as they are, between
    the progress bar's, whatever logging the caller set up; logged for the job's log file, which the
    terminal's print never reaches. Without a logging configuration (no Hydra) the record goes nowhere.
    """
    print(text, flush=True)
    _log.info(text)


def run_start(cfg: DictConfig) -> None:
    """The composed config, once, before anything else of the run."""
    say("config (whole in .hydra/config.yaml of the run folder):\n" + config_tree(cfg))


def run_end(output_dir: Path) -> None:
    """Where the run went and how to look at it: the last lines of every run."""
    say(f"run folder: {_shown(output_dir)}\nTensorBoard: tensorboard --logdir {_shown(output_dir)}")
