import pytest

from cofee.pipeline.curriculum import run_curriculum
from cofee.utils.errors import ConfigError
from tests.support import smoke_cfg


def _cfg(compose_cfg, tmp_path, dump, *extra):
    return smoke_cfg(compose_cfg, tmp_path, dump, "trainer.fast_dev_run=true", *extra)


def test_changed_settings_of_a_finished_stage_are_refused_by_name(compose_cfg, tmp_path, small_dump):
    first = run_curriculum(_cfg(compose_cfg, tmp_path, small_dump))["esi"]
    stage_dir = tmp_path / "outputs" / "smoke" / "esi"
    before = sorted(p.name for p in stage_dir.iterdir())
    changed = _cfg(compose_cfg, tmp_path, small_dump, "stages.esi.optim.lr=2e-3")
    with pytest.raises(ConfigError, match=r"stages\.esi\.optim\.lr \(0\.001 -> 0\.002\)") as err:
        run_curriculum(changed)
    assert "curriculum.retrain_changed=true" in str(err.value)
    assert sorted(p.name for p in stage_dir.iterdir()) == before  # nothing moved or lost
    assert (stage_dir / "encoder" / "manifest.json").is_file()

    retrained = run_curriculum(
        _cfg(compose_cfg, tmp_path, small_dump, "stages.esi.optim.lr=2e-3", "curriculum.retrain_changed=true")
    )["esi"]
    assert retrained["config_hash"] != first["config_hash"]
    kept = [p for p in stage_dir.iterdir() if p.name.startswith("encoder.replaced-")]
    assert len(kept) == 1 and (kept[0] / "manifest.json").is_file()


def test_an_interrupted_stage_with_changed_settings_is_refused(compose_cfg, tmp_path, small_dump):
    cfg = _cfg(compose_cfg, tmp_path, small_dump)
    run_curriculum(cfg)
    stage_dir = tmp_path / "outputs" / "smoke" / "esi"
    # an interrupted stage: checkpoints and recorded inputs, no export yet
    import shutil

    shutil.rmtree(stage_dir / "encoder")
    (stage_dir / "checkpoints").mkdir(exist_ok=True)
    (stage_dir / "checkpoints" / "last.ckpt").write_bytes(b"not used")
    with pytest.raises(ConfigError, match=r"stages\.esi\.batch_size \(16 -> 8\)"):
        run_curriculum(_cfg(compose_cfg, tmp_path, small_dump, "stages.esi.batch_size=8"))
    assert (stage_dir / "checkpoints" / "last.ckpt").read_bytes() == b"not used"


def test_a_truncated_last_checkpoint_is_named_and_nothing_is_lost(compose_cfg, tmp_path, small_dump):
    from cofee.utils.errors import InputFileError

    base = ["trainer.fast_dev_run=false", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    run_curriculum(_cfg(compose_cfg, tmp_path, small_dump, *base))
    stage_dir = tmp_path / "outputs" / "smoke" / "esi"
    last = stage_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    import shutil

    shutil.rmtree(stage_dir / "encoder")  # interrupted before its export
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InputFileError, match=r"last\.ckpt: cannot read this checkpoint"):
        run_curriculum(_cfg(compose_cfg, tmp_path, small_dump, *base))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert last.stat().st_size == len(data) // 2


def test_a_key_added_at_its_default_since_a_stage_finished_is_no_change(compose_cfg, tmp_path, small_dump):
    """Upgrading cofee (a new config key, at its default) must not refuse or retrain finished stages."""
    import json

    first = run_curriculum(_cfg(compose_cfg, tmp_path, small_dump))["esi"]
    manifest_path = tmp_path / "outputs" / "smoke" / "esi" / "encoder" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert (
        manifest["inputs"]["stages"]["esi"]["optim"].pop("distill_weight") == 0.0
    )  # as an older version wrote it
    manifest_path.write_text(json.dumps(manifest))

    again = run_curriculum(_cfg(compose_cfg, tmp_path, small_dump))["esi"]
    assert again["config_hash"] == first["config_hash"]  # skipped, not retrained
    assert not [p for p in manifest_path.parent.parent.iterdir() if ".replaced-" in p.name]
    with pytest.raises(ConfigError, match=r"stages\.esi\.optim\.distill_weight \('<unset>' -> 5\.0\)"):
        run_curriculum(_cfg(compose_cfg, tmp_path, small_dump, "stages.esi.optim.distill_weight=5.0"))


def test_a_stage_trained_alike_in_a_sibling_run_is_copied_not_retrained(
    compose_cfg, tmp_path, small_dump, caplog
):
    import json
    import logging

    caplog.set_level(logging.INFO, logger="cofee.pipeline.curriculum")
    first = run_curriculum(_cfg(compose_cfg, tmp_path, small_dump))["esi"]
    source = tmp_path / "outputs" / "smoke"
    reuse = f"curriculum.reuse_from=[{source}]"
    copied = run_curriculum(_cfg(compose_cfg, tmp_path, small_dump, "run_name=sibling", reuse))["esi"]
    sibling = tmp_path / "outputs" / "sibling" / "esi"
    assert copied == first  # the same manifest, training time included: copied, not trained again
    assert f"esi: the same stage was trained in {source}" in caplog.text
    assert sorted(p.name for p in (sibling / "encoder").iterdir()) == sorted(
        p.name for p in (source / "esi" / "encoder").iterdir()
    )
    # other settings: trained in its own folder, the source untouched
    caplog.clear()
    other = run_curriculum(
        _cfg(compose_cfg, tmp_path, small_dump, "run_name=other", "stages.esi.optim.lr=2e-3", reuse)
    )["esi"]
    assert other["config_hash"] != first["config_hash"]
    assert "copied" not in caplog.text
    assert (
        json.loads((source / "esi" / "encoder" / "manifest.json").read_text())["config_hash"]
        == first["config_hash"]
    )


def test_reusing_a_folder_that_does_not_exist_is_a_config_error(compose_cfg, tmp_path, small_dump):
    with pytest.raises(ConfigError, match=r"curriculum\.reuse_from.*no-such-run"):
        _cfg(compose_cfg, tmp_path, small_dump, f"curriculum.reuse_from=[{tmp_path}/no-such-run]")
