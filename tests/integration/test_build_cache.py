"""`cofee-build-cache`: the token caches built before a run are the ones the run reads.

The command runs as a real process with the overrides of a `cofee-pretrain` run; the curriculum then
runs with the same overrides (plus training-only ones) while building a token cache fails the test,
and must leave the cache folder as the command left it."""

from __future__ import annotations

from cofee.config import validate
from tests.support import PACKAGED_OFF, run_cli, user_lists, write_dump


def _build_cache(*overrides, cwd):
    return run_cli("build_cache", *overrides, cwd=cwd)


def _caches(root):
    """Each cache folder's manifest, by key (a rebuilt cache has another manifest: its build time)."""
    return {p.name: (p / "manifest.json").read_bytes() for p in sorted(root.iterdir()) if p.is_dir()}


def test_pretrain_finds_every_cache_the_command_built(tmp_path, compose_cfg, monkeypatch, capsys):
    from cofee.data_modules import token_cache
    from cofee.pipeline.curriculum import run_curriculum
    from cofee.pipeline.token_caches import build_caches

    overrides = [
        "experiment=smoke",
        f"paths.root={tmp_path}",
        f"data.anchors.dump={write_dump(tmp_path / 'dump.xml')}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        f"data.gazetteer.user_lists_dir={user_lists(tmp_path / 'lists')}",
        *PACKAGED_OFF,
        "stage=all",
    ]
    done = _build_cache(*overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    cache_root = tmp_path / "data" / "token_cache"
    built = _caches(cache_root)
    lines = [line for line in done.stdout.splitlines() if line.startswith("token cache of")]
    # one cache for ESI (the anchor corpus), one shared by NEE and FET (the labelled corpus)
    assert [line.split(":")[0] for line in lines] == ["token cache of esi", "token cache of nee, fet"]
    assert all(": built in " in line for line in lines), lines
    assert "train windows" in done.stderr and "val windows" in done.stderr  # the build's progress bars
    assert sorted(line.split(": ")[2].split(" (")[0].rsplit("/", 1)[1] for line in lines) == sorted(built)

    def no_build(*args, **kwargs):
        raise AssertionError("a token cache was built during the run")

    monkeypatch.setattr(token_cache, "_build", no_build)
    training = [
        *overrides,
        "stages.esi.max_steps=1",
        "stages.nee.max_steps=1",
        "stages.fet.max_steps=1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    cfg = validate(compose_cfg(training))
    results = run_curriculum(cfg)
    assert _caches(cache_root) == built  # no new cache, none rewritten
    assert {results[stage]["token_cache"]["key"] for stage in ("esi", "nee", "fet")} == set(built)

    # run again, the command finds every cache (and builds none: `_build` still fails)
    capsys.readouterr()
    jobs = build_caches(cfg)
    assert [(job.stages, job.built) for job in jobs] == [(["esi"], False), (["nee", "fet"], False)]
    assert "already there" in capsys.readouterr().out


def test_a_misspelt_key_is_one_line_and_status_2(tmp_path):
    done = _build_cache("data.anchors.num_procs=4", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "data.anchors.num_proc" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()


def test_a_build_reports_its_time_until_it_ends(caplog):
    import logging
    import time

    from cofee.pipeline.token_caches import heartbeat

    with caplog.at_level(logging.INFO, logger="cofee.pipeline.token_caches"):
        with heartbeat("cache 1/1: esi", every=0.05):
            time.sleep(0.4)
        during = len(caplog.records)
        time.sleep(0.2)
    assert during >= 2 and len(caplog.records) == during  # lines while it runs, none after
    assert all(r.getMessage().startswith("cache 1/1: esi: ") for r in caplog.records)
