"""Node config: HAMi's `hami-device-plugin` entries merged over the `nvidia:` defaults, per-GPU
modes, and validation messages that say what to write."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.deviceplugin.config import DeviceSelector, NodeConfig, NodeConfigError, defaults_from, load_node_config
from hami.devices import NvidiaConfig

BASE = defaults_from(NvidiaConfig(device_split_count=7, device_memory_scaling=1.0), "n1")


def load(entry: dict | None, node: str = "n1", base: NodeConfig = BASE) -> NodeConfig:
    text = json.dumps({"nodeconfig": [entry]}) if entry is not None else None
    return load_node_config(text, node, base)


def test_hami_chart_example_applies_to_its_node() -> None:
    chart = {"name": "n1", "operatingmode": "hami-core", "devicememoryscaling": 1, "devicesplitcount": 10,
             "migstrategy": "none", "filterdevices": {"uuid": [], "index": []},
             "enablegetpreferredallocation": False}
    config = load(chart)
    assert (config.operating_mode, config.device_split_count, config.enable_get_preferred_allocation) == (
        "hami-core", 10, False)
    assert not config.filter_devices


def test_other_nodes_and_no_config_keep_the_defaults() -> None:
    assert load({"name": "n2", "devicesplitcount": 3}).device_split_count == 7
    assert load(None).device_split_count == 7
    assert load_node_config("", "n1", BASE).name == "n1"
    assert load_node_config('{"other": 1}', "n1", BASE).device_split_count == 7


def test_per_gpu_modes_first_match_wins() -> None:
    config = load({"name": "n1", "operatingmode": "mig", "devicemodes": [
        {"index": [0, 1], "operatingmode": "hami-core"}, {"uuid": ["GPU-b"], "operatingmode": "mig"},
        {"index": [2], "operatingmode": "mig"}]})
    assert config.mode_of("GPU-a", 0) == "hami-core"
    assert config.mode_of("GPU-b", 1) == "hami-core"  # index 1 named first
    assert config.mode_of("GPU-b", 5) == "mig"
    assert config.mode_of("GPU-z", 9) == "mig"  # the node's mode


def test_filterdevices_by_uuid_or_index() -> None:
    config = load({"name": "n1", "filterdevices": {"uuid": ["GPU-x"], "index": [3]}})
    assert config.filtered("GPU-x", 0) and config.filtered("GPU-y", 3) and not config.filtered("GPU-y", 0)


@pytest.mark.parametrize(("entry", "message"), [
    ({"operatingmode": "mps"}, "'mps' is not an operating mode (mps is not implemented); write one of hami-core, mig"),
    ({"devicesplitcount": 0}, "devicesplitcount: 0 is out of range 1..10000"),
    ({"devicesplitcount": "ten"}, "devicesplitcount: expected an integer"),
    ({"devicememoryscaling": -1}, "devicememoryscaling: expected a factor > 0"),
    ({"filterdevices": {"index": [-1]}}, "filterdevices.index: expected a list of GPU indices"),
    ({"filterdevices": {"ids": []}}, "unknown key(s) ids"),
    ({"devicemodes": [{"index": [0]}]}, "each entry names GPUs and an operatingmode"),
    ({"devicemodes": [{"operatingmode": "mig"}]}, "names no GPU"),
    ({"devicemodes": {"index": 0}}, "devicemodes: expected a list"),
    ({"enablegetpreferredallocation": "yes"}, "expected true or false"),
])
def test_invalid_values_name_the_entry_key_and_fix(entry: dict, message: str) -> None:
    with pytest.raises(NodeConfigError) as failed:
        load({"name": "n1", **entry})
    assert message in str(failed.value)
    assert "nodeconfig[0] (node n1)" in str(failed.value)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON (line 1 column 2"),
    ("[1]", 'expected a JSON object {"nodeconfig": [...]}'),
    ('{"nodeconfig": {}}', "nodeconfig must be a list"),
    ('{"nodeconfig": [3]}', "nodeconfig[0] must be an object"),
    ('{"nodeconfig": [{"name": "n1"}, {"name": "n1"}]}', "both name node 'n1'; keep one entry per node"),
])
def test_malformed_documents(text: str, message: str) -> None:
    with pytest.raises(NodeConfigError) as failed:
        load_node_config(text, "n1", BASE)
    assert message in str(failed.value)


def test_unknown_keys_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    config = load({"name": "n1", "devicesplitcont": 3, "migstrategy": "mixed"})
    assert config.device_split_count == 7
    assert "devicesplitcont is not a known node config key" in caplog.text


@given(st.lists(st.integers(0, 15), max_size=4), st.lists(st.integers(0, 15), max_size=4), st.integers(0, 15))
def test_mode_of_follows_the_first_selector(mig: list[int], core: list[int], index: int) -> None:
    modes = []
    if mig:
        modes.append({"index": mig, "operatingmode": "mig"})
    if core:
        modes.append({"index": core, "operatingmode": "hami-core"})
    config = load({"name": "n1", "operatingmode": "hami-core", "devicemodes": modes})
    expected = "mig" if index in mig else "hami-core"
    assert config.mode_of(f"GPU-{index}", index) == expected
    assert DeviceSelector(frozenset(), frozenset(mig)).matches("x", index) == (index in mig)
