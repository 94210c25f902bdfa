"""The low-resource study: variants x training budgets x seeds, fine-tuned and scored on test.

Rows are appended to a CSV as each run ends (atomic rewrite), and a rerun skips rows already there
with the same settings, so an interrupted study resumes where it stopped. With several `split_seeds`
the grid runs on each seeded split of the gold data, and rows are paired only within a split.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from cofee.config import StudyConfig, to_plain
from cofee.experiments.study_pretraining import check_and_record, merge_records, planned_inputs
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_write_text, check_marked_block, replace_marked_block, stable_hash

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
    settings: str  # hash of everything the row depends on (the split's seed and folder included)
    split: int = 0  # the seed of the gold split; last, so files written before it read as split 0


COLUMNS = [f.name for f in fields(StudyRow)]
LEGACY_COLUMNS = COLUMNS[:-1]  # results files written before `split_seeds`: every row on split 0


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


def selected_settings(study: StudyConfig) -> dict[tuple[int, str], str]:
    """(split seed, variant) -> the settings hash its rows carry, for the selected variants on every split."""
    settings = {}
    for split in study.split_seeds:
        on = on_split(study, split)
        settings |= {(split, v): variant_settings(on, v) for v in on.selected_variants()}
    return settings


def current_rows(study: StudyConfig, rows: list[StudyRow]) -> list[StudyRow]:
    """The rows of the study's variants (`only`'s), seeds, budgets and splits at its current settings,
    in the config's variant order (a results file may also hold rows of earlier settings, which must not
    be averaged in, of variants another study trained, or of seeds beyond those a report is asked for,
    e.g. `seeds=[1,2,3]` while seed 4 is half done)."""
    settings = selected_settings(study)
    budgets, seeds = set(study_budgets(study)), set(study.seeds)
    order = {v: i for i, v in enumerate(study.variants)}  # tables and plot list variants as the config does
    kept = (
        r
        for r in rows
        if settings.get((r.split, r.variant)) == r.settings
        and (r.protocol, r.budget) in budgets
        and r.seed in seeds
    )
    return sorted(kept, key=lambda r: order[r.variant])


def study_budgets(study: StudyConfig) -> list[tuple[str, float]]:
    return [("fraction", float(f)) for f in study.fractions] + [("kshot", float(k)) for k in study.kshots]


def split_folder(study: StudyConfig, split: int) -> str:
    """Where the gold split of seed `split` lives: data.split_dir for data.split_seed (the split every
    earlier study ran on stays where it is), `<data.split_dir>-seed<split>` for any other seed (a folder
    holding another split is refused, so each seed needs its own)."""
    data = study.data
    return data.split_dir if split == data.split_seed else f"{data.split_dir}-seed{split}"


def on_split(study: StudyConfig, split: int) -> StudyConfig:
    """The study on the gold split of seed `split`. On data.split_seed it is the study itself, so its
    rows keep the settings hash of a study run before `split_seeds`. On another split its data section
    names that split, and a variant whose pre-training reads the split (the in-domain text
    `${data.split_dir}/train.txt`) is moved to that split's text, with its own run folder and labelled
    corpus (`-seed<split>`); the other variants' pre-training does not depend on the split and is shared."""
    if split == study.data.split_seed:
        return study
    folder = split_folder(study, split)
    variants = {
        name: _variant_on_split(study, name, overrides, folder, f"-seed{split}")
        for name, overrides in study.variants.items()
    }
    return replace(study, data=replace(study.data, split_seed=split, split_dir=folder), variants=variants)


def _variant_on_split(
    study: StudyConfig, name: str, overrides: list[str] | None, folder: str, suffix: str
) -> list[str] | None:
    if overrides is None:
        return None
    # the resolved split folder, as a whole path component (not the prefix of a longer name)
    base = re.compile(re.escape(study.data.split_dir) + r"(?=/|$)")
    moved = [base.sub(lambda _: folder, o) for o in overrides]
    if moved == overrides:
        return overrides
    labelled = variant_root(study, name, overrides).data.gazetteer.labelled_dir
    kept = [o for o in moved if not _is_run_name(o) and not _is_key(o, "data.gazetteer.labelled_dir")]
    return [
        f"run_name={variant_run_name(study, name, overrides)}{suffix}",
        *kept,
        f"data.gazetteer.labelled_dir={labelled}{suffix}",  # labelling its text must not rebuild another's
    ]


def merge_results(path: Path, others: list[Path]) -> int:
    """Add to `path` the rows of `others` (e.g. of studies run in parallel with `only=` and their own
    `results=`) that it lacks, and the records of their pre-training; returns how many rows were added."""
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
    merge_records(path, others)
    return added


def run_key(variant: str, protocol: str, budget: float, seed: int, settings: str, split: int = 0) -> tuple:
    """What makes a fine-tuning the same run: a rerun skips a row with this key."""
    return (variant, protocol, budget, seed, split, settings)


def _key(row: StudyRow) -> tuple:
    return run_key(row.variant, row.protocol, row.budget, row.seed, row.settings, row.split)


def read_rows(path: Path) -> list[StudyRow]:
    """The rows of a results CSV; a wrong header, a short (truncated) or long row, or a value of the
    wrong type is an `InputFileError` naming the file and line. A file without the `split` column (written
    before `split_seeds`) reads as split 0."""
    if not path.is_file():
        return []
    types = {f.name: f.type for f in fields(StudyRow)}
    cast = {"int": int, "float": float, "str": str}
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return []
            if header not in (COLUMNS, LEGACY_COLUMNS):
                raise InputFileError(
                    path, f"header is not the study's columns ({', '.join(COLUMNS)})", line=1
                )
            names = header
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
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
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
    return _is_key(override, "run_name")


def _is_key(override: str, key: str) -> bool:
    return override.split("=", 1)[0].lstrip("+") == key


def variant_root(study: StudyConfig, name: str, overrides: list[str]):
    """The validated pretrain config of a variant's curriculum."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from cofee.config import validate

    run_name = variant_run_name(study, name, overrides)
    rest = [o for o in overrides if not _is_run_name(o)]
    args = [f"paths.root={study.paths.root}", f"run_name={run_name}", *rest]
    if GlobalHydra.instance().is_initialized():
        return validate(_compose_pretrain(study.pretrain_config, args))
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate(_compose_pretrain(study.pretrain_config, args))


def _compose_pretrain(config_name: str, overrides: list[str]):
    from hydra import compose
    from hydra.errors import MissingConfigException

    try:
        return compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as error:
        if error.missing_cfg_file != config_name:
            raise  # a group option a variant names: Hydra's own message says which
        raise ConfigError("pretrain_config", f"no config conf/{config_name}.yaml") from None


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


def planned_pretraining(study: StudyConfig) -> dict[str, dict]:
    """Settings hash -> {variant, split, stages: its curriculum's planned stage inputs}, for every selected
    variant that pre-trains, on every split."""
    planned = {}
    for split in study.split_seeds:
        on = on_split(study, split)
        for variant in on.selected_variants():
            overrides = on.variants[variant]
            if overrides is not None:
                stages = planned_inputs(variant_root(on, variant, overrides))
                planned[variant_settings(on, variant)] = {
                    "variant": variant,
                    "split": split,
                    "stages": stages,
                }
    return planned


def check_variants_pretraining(study: StudyConfig, results: Path, rows: list[StudyRow]) -> None:
    """Before anything trains: refuse a variant whose rows were fine-tuned from another pre-training than
    its curriculum would now train (see `study_pretraining`), and record the others'."""
    check_and_record(results, (r.settings for r in rows), planned_pretraining(study))


@dataclass(frozen=True)
class FinetuneJob:
    """One pending row of the study: everything a worker process needs to produce it."""

    variant: str
    protocol: str
    budget: float
    seed: int
    encoder: Path | None
    settings: str
    split: int = 0  # the seed of the gold split it trains and scores on


def run_job(splits: dict, study: StudyConfig, job: FinetuneJob, trainer_kwargs: dict | None) -> StudyRow:
    """Fine-tune one variant on one budget and seed and score it on test: one row of the study.
    `splits`: split seed -> its `GoldSplits`."""
    from cofee.pipeline.finetune import finetune

    kwargs = {"fraction": job.budget} if job.protocol == "fraction" else {"kshot": int(job.budget)}
    result = finetune(
        splits[job.split],
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
        job.split,
    )


def run_study(study: StudyConfig, trainer_kwargs: dict | None = None) -> list[StudyRow]:
    """Pre-train every variant that has rows to fine-tune first (on every split, for those whose
    pre-training reads it), then fine-tune seed by seed (each seed over every split, budget and variant),
    so that a study stopped early still holds paired rows for every variant. A variant whose rows are all
    in the results (a reference merged from another study) is not pre-trained again. With `workers` > 1
    the fine-tunings run in that many processes at once."""
    from cofee.data_modules.gold_ner import splits_from_config

    study.validate()
    results = Path(study.results)
    rows = read_rows(results)
    done = {_key(r) for r in rows}
    check_variants_pretraining(study, results, rows)
    budgets = study_budgets(study)
    variants = study.selected_variants()
    settings = selected_settings(study)
    pending = [
        (seed, split, protocol, budget, variant)
        for seed in study.seeds
        for split in study.split_seeds
        for protocol, budget in budgets
        for variant in variants
        if run_key(variant, protocol, budget, seed, settings[split, variant], split) not in done
    ]
    to_pretrain = {(split, variant) for _, split, _, _, variant in pending}
    splits, encoders = {}, {}
    for split in study.split_seeds:
        on = on_split(study, split)
        splits[split] = splits_from_config(on.data, on.finetune.scheme)  # also writes train.txt (in-domain)
        for variant in variants:
            if (split, variant) not in to_pretrain:
                log.info("study: variant %s (split %d) has all its rows; not pre-trained", variant, split)
                continue
            log.info("study: pre-training variant %s (split %d)", variant, split)
            encoders[split, variant] = pretrain_variant(on, variant, on.variants[variant])
    jobs = [
        FinetuneJob(
            variant, protocol, budget, seed, encoders[split, variant], settings[split, variant], split
        )
        for seed, split, protocol, budget, variant in pending
    ]
    log.info("study: %d fine-tunings to run (%d rows already in %s)", len(jobs), len(rows), results)
    for count, row in enumerate(_run_jobs(splits, study, jobs, trainer_kwargs), 1):
        rows.append(row)
        write_rows(results, rows)  # as each row ends: a stopped study keeps every finished row
        where = f"{row.variant} {row.protocol}={row.budget:g} seed {row.seed} split {row.split}"
        log.info("study [%d/%d] %s: test F1 %.3f (%.0f s)", count, len(jobs), where, row.test_f1, row.seconds)
    return rows


def _run_jobs(splits: dict, study: StudyConfig, jobs: list[FinetuneJob], trainer_kwargs: dict | None):
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


PROTOCOLS = ("fraction", "kshot")  # the order of table columns and of the plot's rows of panels
LINE_STYLES = ("-", "--", ":", "-.")  # one per split in the plot


def _budgets(rows: list[StudyRow]) -> list[tuple[str, float]]:
    return sorted({(r.protocol, r.budget) for r in rows}, key=lambda x: (PROTOCOLS.index(x[0]), x[1]))


def _budget_label(protocol: str, budget: float) -> str:
    return f"{budget:g} of train" if protocol == "fraction" else f"{int(budget)}-shot"


def markdown_table(rows: list[StudyRow]) -> str:
    summary = summarize(rows)
    variants = list(dict.fromkeys(r.variant for r in rows))
    budgets = _budgets(rows)
    head = "| variant | " + " | ".join(_budget_label(*b) for b in budgets) + " |"
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
    """(variant, protocol, budget) -> the (variant - reference) test F1 of each seed run by both on the
    same split (a pair across splits would compare different test sets)."""
    by_key = {(r.variant, r.protocol, r.budget, r.seed, r.split): r.test_f1 for r in rows}
    diffs = defaultdict(list)
    for (variant, protocol, budget, seed, split), f1 in by_key.items():
        twin = (reference, protocol, budget, seed, split)
        if variant != reference and twin in by_key:
            diffs[(variant, protocol, budget)].append(f1 - by_key[twin])
    return diffs


def seeds_up(diffs: list[float]) -> str:
    """'k/n seeds up', and how many are tied where any are: a tie (the same test F1 to the row's four
    decimals) is neither up nor down, and a column of ties means the two encoders fine-tune alike."""
    tied = sum(d == 0 for d in diffs)
    return f"{sum(d > 0 for d in diffs)}/{len(diffs)} seeds up" + (f", {tied} tied" if tied else "")


def paired_table(rows: list[StudyRow], reference: str = "baseline", compared: list[str] | None = None) -> str:
    """Per cell, the mean and spread of (variant - reference) test F1 over seeds run by both: the same
    seed means the same training subset and order, so seed-to-seed noise largely cancels. One line per
    variant in `compared` (default: every other variant of the rows)."""
    differences = paired_differences(rows, reference)
    budgets = _budgets(rows)
    lines = [
        f"| variant - {reference} | " + " | ".join(_budget_label(*b) for b in budgets) + " |",
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
            cells.append(f"{mean:+.3f} ± {spread:.3f} ({seeds_up(diffs)})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_references(study: StudyConfig, rows: list[StudyRow]) -> list[tuple[str, list[str]]]:
    """The `paired_with` references that have rows, each with the variants compared with it. A variant
    this study does not train (`only`) and has no rows of is left out rather than shown as '–'."""
    present = list(dict.fromkeys(r.variant for r in rows))
    pairs = []
    for reference, compared in study.paired_with.items():
        if reference not in present:
            continue
        shown = [v for v in compared or present if v != reference]
        shown = [v for v in shown if v in present or not study.only or v in study.only]
        if shown:
            pairs.append((reference, shown))
    return pairs


def paired_tables(study: StudyConfig, rows: list[StudyRow]) -> str:
    """The `paired_with` tables of a study report, for the references that have rows."""
    return "".join(
        f"\n\nPaired with {reference} (same seed, same subset):\n\n" + paired_table(rows, reference, compared)
        for reference, compared in paired_references(study, rows)
    )


def across_splits_table(rows: list[StudyRow], reference: str, compared: list[str], splits: list[int]) -> str:
    """Per cell, the mean paired gain over `reference` on each split (in `splits` order, '–' where a
    split has no pair yet), then the seeds and the splits it is up on: a gain up on every split does
    not hang on one split of the data."""
    per_split = [paired_differences([r for r in rows if r.split == s], reference) for s in splits]
    budgets = _budgets(rows)
    lines = [
        f"| variant - {reference} | " + " | ".join(_budget_label(*b) for b in budgets) + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for variant in compared:
        cells = []
        for p, b in budgets:
            found = [differences.get((variant, p, b), []) for differences in per_split]
            run = [diffs for diffs in found if diffs]
            if not run:
                cells.append("–")
                continue
            means = " / ".join(f"{statistics.fmean(d):+.3f}" if d else "–" for d in found)
            splits_up = sum(statistics.fmean(diffs) > 0 for diffs in run)
            every_seed = [d for diffs in run for d in diffs]
            cells.append(f"{means} ({seeds_up(every_seed)}; up on {splits_up}/{len(run)} splits)")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_tables(study: StudyConfig, rows: list[StudyRow]) -> str:
    """The report: test F1 per variant and budget, then the `paired_with` tables. A study of the split
    in data.split_dir alone reads as it did before `split_seeds`; otherwise one section per split, then
    each reference's paired gain on every split side by side."""
    if study.split_seeds == [study.data.split_seed]:
        return markdown_table(rows) + paired_tables(study, rows)
    splits = [s for s in study.split_seeds if any(r.split == s for r in rows)]
    sections = []
    for split in splits:
        part = [r for r in rows if r.split == split]
        where = f"Split {split} (`{split_folder(study, split)}`):\n\n"
        sections.append(where + markdown_table(part) + paired_tables(study, part))
    if len(splits) > 1:
        names = " / ".join(f"split {s}" for s in splits)
        sections += [
            f"Paired with {reference} on every split (mean gain on {names}):\n\n"
            + across_splits_table(rows, reference, compared, splits)
            for reference, compared in paired_references(study, rows)
        ]
    return "\n\n".join(sections)


def report_settings(study: StudyConfig) -> str:
    """The line above the report's tables: how the rows were made."""
    ft = study.finetune
    settings = (
        f"Settings: seeds {study.seeds}, fine-tuning {ft.max_steps} steps, batch {ft.batch_size}, "
        f"lr {ft.optim.lr:g} (head {ft.optim.head_lr:g}), warm-up {ft.optim.warmup_ratio:g}, dev-selected every "
        f"{ft.val_every_steps} steps; test F1 (seqeval strict) mean ± std over the seeds run so far (n per cell). Rows: `{study.results}`."
    )
    if study.split_seeds != [study.data.split_seed]:
        settings += f" Gold splits: seeds {study.split_seeds}; seeds are paired within a split only."
    return settings


def write_plot(
    rows: list[StudyRow], path: Path, pairs: list[tuple[str, list[str]]] | None = None
) -> list[str]:
    """Test F1 against the budget, one line per variant with the seed spread shaded; beside it, for each
    (reference, compared variants) of `pairs` whose reference has rows, the compared variants' paired
    gain over it (seed noise largely cancels; default: every variant over `baseline`). One row of panels
    per protocol run: the share of the training split, then k mentions per type. Each split has its own
    line style. Returns the panels' titles, row by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in rows)]
    variants = list(dict.fromkeys(r.variant for r in rows))
    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}  # the same colour in every panel
    splits = sorted({r.split for r in rows})
    styles = {split: LINE_STYLES[i % len(LINE_STYLES)] for i, split in enumerate(splits)}
    if pairs is None:
        pairs = [("baseline", variants)]
    pairs = [
        (ref, [v for v in compared or variants if v in variants and v != ref])  # none named: all
        for ref, compared in pairs
        if ref in variants
    ]
    pairs = [(ref, compared) for ref, compared in pairs if compared]
    fig, axes = plt.subplots(
        len(protocols), 1 + len(pairs), figsize=(6.4 * (1 + len(pairs)), 4.4 * len(protocols)), squeeze=False
    )
    for panels, protocol in zip(axes, protocols):
        kind = "" if protocol == "fraction" else ", k-shot"
        own = [r for r in rows if r.protocol == protocol]
        for split in splits:
            part = [r for r in own if r.split == split]
            cells = {key: (s["mean"], s["std"]) for key, s in summarize(part).items()}
            _plot_lines(panels[0], cells, variants, colors, styles[split], labelled=split == splits[0])
        panels[0].set_ylabel("test F1 (seqeval strict), mean ± std over seeds")
        panels[0].set_title(f"Low-resource NER on WNUT16{kind}")
        for panel, (reference, compared) in zip(panels[1:], pairs):
            for split in splits:
                part = [r for r in own if r.split == split]
                gains = {key: mean_std(d) for key, d in paired_differences(part, reference).items()}
                _plot_lines(panel, gains, compared, colors, styles[split], labelled=split == splits[0])
            # dashed, unless dashes already mark a split
            zero = {"linestyle": "--"} if len(splits) == 1 else {"linestyle": "-", "linewidth": 0.8}
            panel.axhline(0.0, color=colors[reference], label=f"{reference} (0)", **zero)
            panel.set_ylabel(f"test F1 - {reference}, same seed and subset (mean ± std)")
            panel.set_title(f"Paired gain over {reference}{kind}")
        for ax in panels:
            _budget_axis(ax, protocol, sorted({r.budget for r in own}))
            if len(splits) > 1:  # the line style of each split, once per panel
                for split in splits:
                    ax.plot([], [], color="0.4", linestyle=styles[split], label=f"split {split}")
            ax.legend(fontsize="small")
    if len(protocols) > 1:
        fig.tight_layout()  # keeps the x labels of a row off the titles of the next
    titles = [ax.get_title() for ax in axes.flat]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return titles


def _plot_lines(
    ax,
    cells: dict[tuple[str, str, float], tuple[float, float]],
    variants: list[str],
    colors: dict[str, str],
    style: str = "-",
    labelled: bool = True,
) -> None:
    """One line per variant through (budget, mean), with mean ± spread shaded (an error bar where a
    variant has one budget)."""
    for variant in variants:
        points = sorted((b, cell) for (v, _, b), cell in cells.items() if v == variant)
        if not points:
            continue
        xs = [b for b, _ in points]
        mean = [m for _, (m, _) in points]
        low = [m - d for _, (m, d) in points]
        high = [m + d for _, (m, d) in points]
        label = variant if labelled else None
        ax.plot(xs, mean, marker="o", label=label, color=colors[variant], linestyle=style)
        ax.fill_between(xs, low, high, alpha=0.15, color=colors[variant])
        if len(xs) == 1:  # a band over one budget has no width: show the spread as an error bar
            spread = [[mean[0] - low[0]], [high[0] - mean[0]]]
            ax.errorbar(xs, mean, yerr=spread, fmt="none", ecolor=colors[variant], capsize=5, alpha=0.7)


def _budget_axis(ax, protocol: str, budgets: list[float]) -> None:
    """Log x with a tick at each budget run (not at powers of ten)."""
    ax.set_xscale("log")
    if protocol == "fraction":
        ax.set_xticks(budgets, [f"{b * 100:g}%" for b in budgets])
        ax.set_xlabel("share of the gold training split")
    else:
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.set_xlabel("k mentions per type (k-shot sample of the training split)")
    ax.grid(True, alpha=0.3)


def update_readme(readme: Path, table: str, settings: str, block: str = "study") -> None:
    """Rewrite the block between the `block` markers (InputFileError when they are missing). A study run
    with a narrower `only` rewrites the whole block with its variants alone, so the variants the block
    listed before and lists no longer are named in a warning."""
    replaced = replace_marked_block(readme, block, f"{settings}\n\n{table}")
    dropped = sorted(_row_names(replaced) - _row_names(table))
    if dropped:
        log.warning(
            "%s: block '%s' no longer lists %s; their rows stay in the results file, and the study run "
            "with `report_only=true` and without `only` lists them again",
            readme,
            block,
            ", ".join(dropped),
        )


def _row_names(tables: str) -> set[str]:
    """The first cells of a Markdown table's rows: the variants a block lists."""
    return set(re.findall(r"^\| ([\w.-]+) \|", tables, flags=re.MULTILINE))


def run_and_report(study: StudyConfig, trainer_kwargs: dict | None = None) -> str:
    """What `cofee-study` does: merge, train (unless `report_only`), then write the report's tables into
    the `block` of `readme` and the plot; returns the tables."""
    study.validate()
    if study.readme:
        check_marked_block(study.readme, study.block)  # before hours of fine-tuning, not after
    if study.merge:
        added = merge_results(Path(study.results), [Path(p) for p in study.merge])
        log.info("merged %d rows into %s", added, study.results)
    if study.report_only:  # the table and plot from the rows so far (e.g. of a study still running)
        rows = read_rows(Path(study.results))
    else:
        rows = run_study(study, trainer_kwargs)
    rows = current_rows(study, rows)
    if not rows:
        raise ConfigError("results", f"{study.results} holds no rows of these variants at these settings yet")
    table = report_tables(study, rows)
    write_plot(rows, Path(study.plot), paired_references(study, rows))
    if study.readme:
        update_readme(Path(study.readme), table, report_settings(study), study.block)
        log.info("table updated in %s (block '%s')", study.readme, study.block)
    return table
