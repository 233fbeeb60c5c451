"""petloc.modes: the modes are the files of conf/mode/, and a Mode checks its own values and the class
names its class branch is given, naming the key or the mode in every refusal."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from petloc import CONFIG_DIR
from petloc.modes import Mode, mode_names


def test_the_modes_are_the_files_of_the_mode_group() -> None:
    """One place lists the modes and what each needs: conf/mode/NAME.yaml (name, label set, weight)."""
    assert mode_names() == tuple(sorted(p.stem for p in (CONFIG_DIR / "mode").glob("*.yaml")))
    assert {"box", "class", "species", "breed"} <= set(mode_names())  # the README's modes
    for name in mode_names():
        mode = Mode.from_config(OmegaConf.load(CONFIG_DIR / "mode" / f"{name}.yaml"))
        assert mode.name == name
        assert mode.classifies == (name != "box")
        names = ["a", "b"] if mode.classifies else []
        assert mode.check_class_names(names) == names
    with pytest.raises(ValueError, match=r"mode='species' trains the label set 'species' and needs at least"):
        Mode("species", "species", 0.5).check_class_names(["cat"])
    with pytest.raises(ValueError, match="mode='box' has no class branch"):
        Mode("box").check_class_names(["cat", "dog"])


def test_a_node_without_labels_or_weight_is_box_like() -> None:
    """Keys left out of a ``mode`` node take the dataclass's defaults: no class branch, weight 0."""
    mode = Mode.from_config({"name": "box"})
    assert mode == Mode("box", None, 0.0)
    assert not mode.classifies
    assert mode.check_class_names(None) == []
    assert Mode.from_config(OmegaConf.create({"name": "class", "labels": "class", "cls_weight": 2})) == Mode(
        "class", "class", 2
    )


def test_class_names_come_back_as_a_list_in_their_order() -> None:
    assert Mode("class", "class", 0.5).check_class_names(("zebra", "ant", "cat")) == ["zebra", "ant", "cat"]
    with pytest.raises(ValueError, match=r"mode='class' .* got \[\]"):
        Mode("class", "class", 0.5).check_class_names(None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": "class", "labels": ""}, r"mode.labels='': a label set's name"),
        ({"name": "class", "labels": 3}, r"mode.labels=3: a label set's name"),
        ({"name": "class", "labels": "class", "cls_weight": -0.5}, r"mode.cls_weight=-0.5: .* >= 0"),
        ({"name": "class", "labels": "class", "cls_weight": math.nan}, r"mode.cls_weight=nan: .* >= 0"),
        ({"name": "class", "labels": "class", "cls_weight": True}, r"mode.cls_weight=True: .* a number"),
        ({"name": "class", "labels": "class", "cls_weight": "0.5"}, r"mode.cls_weight='0.5': .* a number"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mode.from_config(values)
