from cofee.pipeline.config_diff import changed_keys, describe_changes, flatten


def test_flatten_names_leaves_in_full():
    assert flatten({"stage": {"optim": {"lr": 1e-5}, "types": ["PER"]}, "seed": 1}) == {
        "stage.optim.lr": 1e-5,
        "stage.types": ["PER"],
        "seed": 1,
    }


def test_changed_keys_reports_changed_added_and_removed_leaves():
    old = {"stage": {"optim": {"lr": 1e-5, "warmup_ratio": 0.1}}, "seed": 1, "gone": True}
    new = {"stage": {"optim": {"lr": 2e-5, "warmup_ratio": 0.1}}, "seed": 1, "added": 3}
    assert changed_keys(old, new) == [
        ("added", "<unset>", 3),
        ("gone", True, "<unset>"),
        ("stage.optim.lr", 1e-5, 2e-5),
    ]
    assert changed_keys(old, old) == []


def test_describe_changes_is_one_line_and_bounded():
    changes = [(f"k{i}", i, i + 1) for i in range(8)]
    text = describe_changes(changes, limit=2)
    assert text == "k0 (0 -> 1), k1 (1 -> 2) and 6 more"
