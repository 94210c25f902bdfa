"""How far pre-training moved an encoder: the L2 distance over all its weights between exports
(`cofee-report report=encoder_drift`).

A stage lever whose loss barely moves the encoder cannot change what fine-tuning makes of it; this
table says how much each of FET's variants moved the encoder from the NEE export they all start
from, and how far each ended from FET without its cluster loss (what the cluster loss alone did).
"""

from __future__ import annotations

import math
from pathlib import Path

from cofee.models.encoder import check_model_folder
from cofee.utils.errors import ConfigError, InputFileError

WEIGHTS = "model.safetensors"


def check_export(folder: str | Path) -> Path:
    """An export folder with whole weights in `model.safetensors`; cheap: no weights are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "no such export folder")
    check_model_folder(folder)
    if not (folder / WEIGHTS).is_file():
        raise InputFileError(folder, f"no {WEIGHTS} in the export folder")
    return folder


def encoder_weights(folder: str | Path) -> dict:
    """The floating-point tensors of a checked export's `model.safetensors`."""
    from safetensors.torch import load_file

    return {name: t for name, t in load_file(str(Path(folder) / WEIGHTS)).items() if t.is_floating_point()}


def weight_distance(a: dict, b: dict, b_folder: str | Path) -> float:
    """L2 norm of `a - b` over every tensor; `b` (read from `b_folder`, named in the error) must hold
    the same tensors with the same shapes."""
    if a.keys() != b.keys():
        odd = sorted(a.keys() ^ b.keys())
        raise InputFileError(
            b_folder, f"another encoder: {len(odd)} tensors differ from the start's, e.g. {odd[0]}"
        )
    total = 0.0
    for name, tensor in a.items():
        if tensor.shape != b[name].shape:
            shapes = f"{tuple(b[name].shape)} against the start's {tuple(tensor.shape)}"
            raise InputFileError(b_folder, f"another encoder: {name} has shape {shapes}")
        total += float(((tensor.double() - b[name].double()) ** 2).sum())
    return math.sqrt(total)


def export_label(folder: str | Path) -> str:
    """`<run>/<stage>` of a `<run>/<stage>/encoder` folder (the folder itself when it is named otherwise)."""
    folder = Path(folder)
    return f"{folder.parent.parent.name}/{folder.parent.name}" if folder.name == "encoder" else str(folder)


def drift_table(start: str | Path, folders: list[str]) -> str:
    """Markdown: each export's distance from `start` and from the first export (the reference)."""
    if not folders:
        raise ConfigError("drift_exports", "empty: name at least one export")
    exports = {export_label(folder): folder for folder in folders}
    if len(exports) < len(folders):
        raise ConfigError("drift_exports", "two exports share a <run>/<stage> label")
    for folder in (start, *folders):
        check_export(folder)  # every folder before any weights are read
    # three encoders in memory at most (the start, the reference and the one scored), whatever the count
    origin = encoder_weights(start)
    reference_label, reference_folder = next(iter(exports.items()))
    reference = encoder_weights(reference_folder)
    norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in origin.values()))
    lines = [
        f"Start: `{export_label(start)}` (weight norm {norm:.1f}). Distances are L2 over every encoder weight.",
        "",
        f"| export | moved from the start | from {reference_label} |",
        "|---|---|---|",
    ]
    for label, folder in exports.items():
        weights = reference if label == reference_label else encoder_weights(folder)
        moved = weight_distance(origin, weights, folder)
        apart = "-" if weights is reference else f"{weight_distance(reference, weights, folder):.3f}"
        lines.append(f"| {label} | {moved:.3f} | {apart} |")
    return "\n".join(lines)
