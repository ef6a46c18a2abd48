"""The plugin door: registration hooks, clashes, unknown names, event hooks."""

from __future__ import annotations

import pytest

import fbench
from fbench import DatasetSpec, DetectorSpec, FbenchError, TransformSpec, UnknownNameError
from fbench.plugins.registry import get_registry, registered


def _factory(num_classes=3, width=4):
    return ("model", num_classes, width)


class OneOfEach:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(DetectorSpec(name="inline-det", summary="s", factory=_factory))

    @fbench.hookimpl
    def register_datasets(self, register):
        register(DatasetSpec(name="inline-data", summary="s", factory=lambda root: None))

    @fbench.hookimpl
    def register_transforms(self, register):
        register(TransformSpec(name="inline-tf", summary="s", factory=lambda: None))


def test_builtins_come_through_entry_points():
    reg = get_registry()
    assert "resnet18" in fbench.list_detectors()
    assert "synthetic" in fbench.list_datasets()
    assert "raw" in fbench.list_transforms()
    builtin = {p.name: p for p in reg.plugins()}
    assert builtin["resnet"].builtin and builtin["resnet"].distribution == "fbench"
    assert builtin["resnet"].detectors == ("resnet18",)


def test_inline_plugin_registers_for_its_duration_only():
    with registered(OneOfEach(), name="inline"):
        assert "inline-det" in fbench.list_detectors()
        assert "inline-data" in fbench.list_datasets()
        assert "inline-tf" in fbench.list_transforms()
        assert get_registry().provider("detector", "inline-det") == "inline"
        assert fbench.create_detector("inline-det", width=7) == ("model", 3, 7)
    assert "inline-det" not in fbench.list_detectors()


def test_pattern_filter_like_timm():
    with registered(OneOfEach(), name="inline"):
        assert fbench.list_detectors("inline-*") == ["inline-det"]
        assert fbench.list_detectors("nothing-*") == []


def test_name_clash_names_both_plugins():
    class Clash:
        @fbench.hookimpl
        def register_detectors(self, register):
            register(DetectorSpec(name="resnet18", summary="mine", factory=_factory))

    with registered(Clash(), name="my-clash"):
        with pytest.raises(FbenchError) as err:
            fbench.list_detectors()
    assert "resnet" in str(err.value) and "my-clash" in str(err.value)


def test_unknown_name_offers_close_matches():
    with pytest.raises(UnknownNameError) as err:
        fbench.create_detector("resnet81")
    assert err.value.close_matches[0] == "resnet18"  # the closest first
    assert "resnet18" in str(err.value)
    with pytest.raises(UnknownNameError, match="fbench list datasets"):
        fbench.load_dataset("zzzzzz")


def test_unknown_option_lists_accepted_ones():
    with registered(OneOfEach(), name="inline"):
        with pytest.raises(FbenchError, match="width"):
            fbench.create_detector("inline-det", depht=3)


def test_wrong_spec_type_is_refused():
    class Wrong:
        @fbench.hookimpl
        def register_detectors(self, register):
            register(DatasetSpec(name="oops", summary="s", factory=_factory))

    with registered(Wrong(), name="wrong"):
        with pytest.raises(FbenchError, match="expected fbench.DetectorSpec"):
            fbench.list_detectors()


def test_names_must_be_kebab_case():
    with pytest.raises(ValueError, match="kebab-case"):
        DetectorSpec(name="My Detector", summary="s", factory=_factory)


def test_load_plugins_env_keeps_external_packages_out(monkeypatch):
    from fbench.plugins.registry import Registry

    reg = Registry()
    monkeypatch.setenv("FBENCH_LOAD_PLUGINS", "")
    assert reg._allowed("fbench") and not reg._allowed("fbench-tiny-cnn")
    monkeypatch.setenv("FBENCH_LOAD_PLUGINS", "fbench_tiny_cnn, other")
    assert reg._allowed("fbench-tiny-cnn") and not reg._allowed("third")
    monkeypatch.delenv("FBENCH_LOAD_PLUGINS")
    assert reg._allowed("anything")


def test_bench_groups_are_strings_and_stored_as_a_tuple():
    spec = DetectorSpec(name="timed", summary="s", factory=_factory, bench_groups=["freq: A"])
    assert spec.bench_groups == ("freq: A",)
    for bad in ("freq: A", ("",), (3,)):
        with pytest.raises(ValueError, match="bench_groups"):
            DetectorSpec(name="timed", summary="s", factory=_factory, bench_groups=bad)


def test_register_callbacks_are_typed_in_the_hookspecs():
    import typing

    from fbench.plugins import hookspecs

    hints = typing.get_type_hints(hookspecs.register_detectors)
    assert typing.get_args(hints["register"])[0] == [DetectorSpec]
