"""The low-resource study: variants x training budgets x seeds, fine-tuned and scored on test.

Rows are appended to a CSV as each run ends (atomic rewrite), and a rerun skips rows already there
with the same settings, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cofee.config import StudyConfig, to_plain
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_write_text, replace_marked_block, stable_hash

log = logging.getLogger(__name__)


@dataclass
class StudyRow:
    variant: str
    protocol: str  # "fraction" or "kshot"
    budget: float  # the fraction, or k
    seed: int
    train_sentences: int
    dev_f1: float
    test_f1: float
    test_f1_low: float
    test_f1_high: float
    test_precision: float
    test_recall: float
    untyped_f1: float
    best_step: int
    seconds: float
    settings: str  # hash of everything the row depends on


def variant_settings(study: StudyConfig, variant: str) -> str:
    """The hash a row of this variant carries: everything its F1 depends on, except the seed and budget."""
    return stable_hash(
        {
            "finetune": to_plain(study.finetune),
            "data": to_plain(study.data),
            "model": to_plain(study.model),
            "variant": study.variants[variant],
        }
    )


def current_rows(study: StudyConfig, rows: list[StudyRow]) -> list[StudyRow]:
    """The rows of the study's variants, seeds and budgets at its current settings, in the config's variant
    order (a results file may also hold rows of earlier settings, which must not be averaged in, or of
    seeds beyond those a report is asked for, e.g. `seeds=[1,2,3]` while seed 4 is half done)."""
    settings = {v: variant_settings(study, v) for v in study.variants}
    budgets, seeds = set(study_budgets(study)), set(study.seeds)
    order = {v: i for i, v in enumerate(study.variants)}  # tables and plot list variants as the config does
    kept = (
        r
        for r in rows
        if settings.get(r.variant) == r.settings and (r.protocol, r.budget) in budgets and r.seed in seeds
    )
    return sorted(kept, key=lambda r: order[r.variant])


def study_budgets(study: StudyConfig) -> list[tuple[str, float]]:
    return [("fraction", float(f)) for f in study.fractions] + [("kshot", float(k)) for k in study.kshots]


def merge_results(path: Path, others: list[Path]) -> int:
    """Add to `path` the rows of `others` (e.g. of studies run in parallel with `only=` and their own
    `results=`) that it lacks; returns how many were added."""
    rows = read_rows(path)
    keys = {_key(r) for r in rows}
    added = 0
    for other in others:
        if not other.is_file():
            raise ConfigError("merge", f"{other}: no such results file")
        for row in read_rows(other):
            if _key(row) not in keys:
                rows.append(row)
                keys.add(_key(row))
                added += 1
    if added:
        write_rows(path, rows)
    return added


def run_key(variant: str, protocol: str, budget: float, seed: int, settings: str) -> tuple:
    """What makes a fine-tuning the same run: a rerun skips a row with this key."""
    return (variant, protocol, budget, seed, settings)


def _key(row: StudyRow) -> tuple:
    return run_key(row.variant, row.protocol, row.budget, row.seed, row.settings)


def read_rows(path: Path) -> list[StudyRow]:
    """The rows of a results CSV; a wrong header, a short (truncated) or long row, or a value of the
    wrong type is an `InputFileError` naming the file and line."""
    if not path.is_file():
        return []
    names = [f.name for f in fields(StudyRow)]
    types = {f.name: f.type for f in fields(StudyRow)}
    cast = {"int": int, "float": float, "str": str}
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return []
            if header != names:
                raise InputFileError(path, f"header is not the study's columns ({', '.join(names)})", line=1)
            for record in reader:
                line = reader.line_num
                if not record:
                    continue
                if len(record) != len(names):
                    raise InputFileError(
                        path, f"{len(record)} field(s), expected {len(names)} (a truncated row?)", line=line
                    )
                values = {}
                for name, value in zip(names, record):
                    try:
                        values[name] = cast[types[name]](value)
                    except ValueError:
                        raise InputFileError(
                            path, f"column '{name}': {value!r} is not a {types[name]}", line=line
                        ) from None
                rows.append(StudyRow(**values))
    except UnicodeDecodeError:
        raise InputFileError(path, "not valid UTF-8") from None
    except csv.Error as exc:
        raise InputFileError(path, f"not a valid CSV file ({exc})") from None
    return rows


def write_rows(path: Path, rows: list[StudyRow]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(StudyRow)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    atomic_write_text(path, buffer.getvalue())


def variant_run_name(study: StudyConfig, name: str, overrides: list[str]) -> str:
    """The run folder of a variant's curriculum: its own `run_name=` override when it gives one (variants
    naming the same run share the stages they have in common with the same settings), else
    `<study run_name>-<variant>`."""
    given = [o.split("=", 1)[1] for o in overrides if _is_run_name(o)]
    return given[-1] if given else f"{study.run_name}-{name}"


def _is_run_name(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+") == "run_name"


def variant_root(study: StudyConfig, name: str, overrides: list[str]):
    """The validated pretrain config of a variant's curriculum."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from cofee.config import validate

    run_name = variant_run_name(study, name, overrides)
    rest = [o for o in overrides if not _is_run_name(o)]
    args = [f"paths.root={study.paths.root}", f"run_name={run_name}", *rest]
    if GlobalHydra.instance().is_initialized():
        return validate(compose(config_name="pretrain", overrides=args))
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate(compose(config_name="pretrain", overrides=args))


def pretrain_variant(study: StudyConfig, name: str, overrides: list[str] | None) -> Path | None:
    """Run (or find done) the variant's curriculum; returns its last stage's export folder. Stages that
    another variant's run folder already holds with the same inputs (the ESI and NEE of the FET
    controls) are copied from there, not trained again."""
    if overrides is None:
        return None
    from cofee.pipeline.curriculum import run_curriculum

    root = variant_root(study, name, overrides)
    own = Path(root.paths.output_dir).resolve()
    siblings = {
        Path(variant_root(study, other, given).paths.output_dir).resolve()
        for other, given in study.variants.items()
        if given is not None and other != name
    }
    root.curriculum.reuse_from = [str(folder) for folder in sorted(siblings - {own}) if folder.is_dir()]
    run_curriculum(root)
    return Path(root.paths.output_dir) / root.curriculum.stages[-1] / "encoder"


@dataclass(frozen=True)
class FinetuneJob:
    """One pending row of the study: everything a worker process needs to produce it."""

    variant: str
    protocol: str
    budget: float
    seed: int
    encoder: Path | None
    settings: str


def run_job(splits, study: StudyConfig, job: FinetuneJob, trainer_kwargs: dict | None) -> StudyRow:
    """Fine-tune one variant on one budget and seed and score it on test: one row of the study."""
    from cofee.pipeline.finetune import finetune

    kwargs = {"fraction": job.budget} if job.protocol == "fraction" else {"kshot": int(job.budget)}
    result = finetune(
        splits,
        study.finetune,
        job.encoder,
        study.model,
        seed=job.seed,
        trainer_kwargs=trainer_kwargs,
        **kwargs,
    )
    micro = result.test["micro"]
    return StudyRow(
        job.variant,
        job.protocol,
        job.budget,
        job.seed,
        result.train_sentences,
        round(result.dev_f1, 4),
        round(micro["f1"], 4),
        round(micro["f1_ci95"][0], 4),
        round(micro["f1_ci95"][1], 4),
        round(micro["precision"], 4),
        round(micro["recall"], 4),
        round(result.test["untyped"]["f1"], 4),
        result.best_step,
        result.seconds,
        job.settings,
    )


def run_study(study: StudyConfig, trainer_kwargs: dict | None = None) -> list[StudyRow]:
    """Pre-train every variant first, then fine-tune seed by seed (each seed over every budget and
    variant), so that a study stopped early still holds paired rows for every variant. With
    `workers` > 1 the fine-tunings run in that many processes at once."""
    from cofee.data_modules.gold_ner import splits_from_config

    splits = splits_from_config(study.data, study.finetune.scheme)  # also writes train.txt (in-domain text)
    results = Path(study.results)
    rows = read_rows(results)
    done = {_key(r) for r in rows}
    budgets = study_budgets(study)
    variants = {k: v for k, v in study.variants.items() if not study.only or k in study.only}
    encoders, settings = {}, {}
    for variant, overrides in variants.items():
        log.info("study: pre-training variant %s", variant)
        encoders[variant] = pretrain_variant(study, variant, overrides)
        settings[variant] = variant_settings(study, variant)
    jobs = [
        FinetuneJob(variant, protocol, budget, seed, encoders[variant], settings[variant])
        for seed in study.seeds
        for protocol, budget in budgets
        for variant in variants
        if run_key(variant, protocol, budget, seed, settings[variant]) not in done
    ]
    log.info("study: %d fine-tunings to run (%d rows already in %s)", len(jobs), len(rows), results)
    for count, row in enumerate(_run_jobs(splits, study, jobs, trainer_kwargs), 1):
        rows.append(row)
        write_rows(results, rows)  # as each row ends: a stopped study keeps every finished row
        where = f"{row.variant} {row.protocol}={row.budget:g} seed {row.seed}"
        log.info("study [%d/%d] %s: test F1 %.3f (%.0f s)", count, len(jobs), where, row.test_f1, row.seconds)
    return rows


def _run_jobs(splits, study: StudyConfig, jobs: list[FinetuneJob], trainer_kwargs: dict | None):
    """Yield the jobs' rows as they finish: in this process, or in `study.workers` spawned processes
    that split the CPU cores between them (`make bench`: study_workers measures the gain)."""
    if study.workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_job(splits, study, job, trainer_kwargs)
        return
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from functools import partial
    from itertools import islice

    threads = max(1, len(os.sched_getaffinity(0)) // study.workers)
    context = multiprocessing.get_context("spawn")  # fork would copy a process that has started torch threads
    queue = iter(jobs)
    with ProcessPoolExecutor(
        study.workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        launch = partial(pool.submit, run_job, splits, study, trainer_kwargs=trainer_kwargs)
        # a job is submitted only when a worker is free, so after a failure no new one starts
        pending = {launch(job) for job in islice(queue, study.workers)}
        error = None
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                if future.exception() is not None:
                    error = error or future.exception()  # the running rows still end and are kept
                else:
                    yield future.result()
            if error is None:
                pending |= {launch(job) for job in islice(queue, len(finished))}
        if error is not None:
            raise error


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[StudyRow]) -> dict[tuple[str, str, float], dict]:
    cells = defaultdict(list)
    for r in rows:
        cells[(r.variant, r.protocol, r.budget)].append(r.test_f1)
    return {
        key: dict(zip(("mean", "std"), mean_std(v)), median=statistics.median(v), n=len(v))
        for key, v in cells.items()
    }


def markdown_table(rows: list[StudyRow]) -> str:
    summary = summarize(rows)
    variants = list(dict.fromkeys(r.variant for r in rows))
    budgets = sorted({(p, b) for _, p, b in summary}, key=lambda x: (x[0] != "fraction", x[1]))
    label = {("fraction", b): f"{b:g} of train" for _, _, b in summary} | {
        ("kshot", b): f"{int(b)}-shot" for _, _, b in summary
    }
    head = "| variant | " + " | ".join(label[b] for b in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for v in variants:
        cells = []
        for p, b in budgets:
            s = summary.get((v, p, b))
            cells.append(
                f"{s['mean']:.3f} ± {s['std']:.3f} (median {s['median']:.3f}, n={s['n']})" if s else "–"
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(rows: list[StudyRow], reference: str) -> dict[tuple[str, str, float], list[float]]:
    """(variant, protocol, budget) -> the (variant - reference) test F1 of each seed run by both."""
    by_key = {(r.variant, r.protocol, r.budget, r.seed): r.test_f1 for r in rows}
    diffs = defaultdict(list)
    for (variant, protocol, budget, seed), f1 in by_key.items():
        if variant != reference and (reference, protocol, budget, seed) in by_key:
            diffs[(variant, protocol, budget)].append(f1 - by_key[(reference, protocol, budget, seed)])
    return diffs


def paired_table(rows: list[StudyRow], reference: str = "baseline", compared: list[str] | None = None) -> str:
    """Per cell, the mean and spread of (variant - reference) test F1 over seeds run by both: the same
    seed means the same training subset and order, so seed-to-seed noise largely cancels. One line per
    variant in `compared` (default: every other variant of the rows)."""
    differences = paired_differences(rows, reference)
    budgets = sorted({(r.protocol, r.budget) for r in rows}, key=lambda x: (x[0] != "fraction", x[1]))
    lines = [
        "| variant - "
        + reference
        + " | "
        + " | ".join(f"{b:g} of train" if p == "fraction" else f"{int(b)}-shot" for p, b in budgets)
        + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for variant in compared or dict.fromkeys(r.variant for r in rows):
        if variant == reference:
            continue
        cells = []
        for p, b in budgets:
            diffs = differences.get((variant, p, b), [])
            if not diffs:
                cells.append("–")
                continue
            mean, spread = mean_std(diffs)
            cells.append(f"{mean:+.3f} ± {spread:.3f} ({sum(d > 0 for d in diffs)}/{len(diffs)} seeds up)")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_tables(study: StudyConfig, rows: list[StudyRow]) -> str:
    """The `paired_with` tables of a study report, for the references that have rows."""
    present = {r.variant for r in rows}
    return "".join(
        f"\n\nPaired with {reference} (same seed, same subset):\n\n" + paired_table(rows, reference, compared)
        for reference, compared in study.paired_with.items()
        if reference in present
    )


def write_plot(rows: list[StudyRow], path: Path, reference: str = "baseline") -> None:
    """F1 against the training share, one line per variant with the seed spread shaded; beside it,
    when the reference has rows, each variant's paired gain over it (seed noise largely cancels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.protocol == "fraction"]
    variants = list(dict.fromkeys(r.variant for r in rows))
    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}  # the same colour in both panels
    paired = reference in variants and len(variants) > 1
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(12.8 if paired else 6.4, 4.4), squeeze=False)
    summary = {key: (s["mean"], s["std"]) for key, s in summarize(rows).items()}
    _plot_lines(axes[0][0], summary, variants, colors)
    axes[0][0].set_ylabel("test F1 (seqeval strict), mean ± std over seeds")
    axes[0][0].set_title("Low-resource NER on WNUT16")
    if paired:
        gains = {key: mean_std(d) for key, d in paired_differences(rows, reference).items()}
        ax = axes[0][1]
        _plot_lines(ax, gains, [v for v in variants if v != reference], colors)
        ax.axhline(0.0, color=colors[reference], linestyle="--", label=f"{reference} (0)")
        ax.set_ylabel(f"test F1 - {reference}, same seed and subset (mean ± std)")
        ax.set_title(f"Paired gain over {reference}")
    for ax in axes[0]:
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def _plot_lines(
    ax, cells: dict[tuple[str, str, float], tuple[float, float]], variants: list[str], colors
) -> None:
    """One line per variant through (share, mean), with mean ± spread shaded; log x at the shares run."""
    for variant in variants:
        points = sorted((b, cell) for (v, _, b), cell in cells.items() if v == variant)
        if not points:
            continue
        xs = [b * 100 for b, _ in points]
        mean = [m for _, (m, _) in points]
        low = [m - d for _, (m, d) in points]
        high = [m + d for _, (m, d) in points]
        ax.plot(xs, mean, marker="o", label=variant, color=colors[variant])
        ax.fill_between(xs, low, high, alpha=0.15, color=colors[variant])
    ax.set_xscale("log")
    shares = sorted({b * 100 for (_, _, b) in cells})
    ax.set_xticks(shares, [f"{x:g}%" for x in shares])  # the budgets run, not powers of ten
    ax.set_xlabel("share of the gold training split")
    ax.grid(True, alpha=0.3)


def update_readme(readme: Path, table: str, settings: str) -> None:
    """Rewrite the block between the study markers (InputFileError when they are missing)."""
    replace_marked_block(readme, "study", f"{settings}\n\n{table}")
