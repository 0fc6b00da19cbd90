"""hami.io/node-nvidia-register: HAMi's JSON (v2.8+, v2.10 migProfiles) and colon (v2.5-v2.7) forms."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import AnnotationError, MigProfileInfo, NodeDevice, Placement, names
from hami.api.codecs import decode_node_register, encode_node_register

# HAMi's own examples (hami-behaviour §1.5: issue #1950, issue #1014, the v2.10 profile shape).
HAMI_JSON_1950 = (
    '[{"id":"GPU-..","count":10,"devmem":143771,"devcore":100,"type":"NVIDIA H200 NVL",'
    '"mode":"hami-core","health":true}]'
)
HAMI_COLON_1014 = "GPU-3ef99f5d-...,10,95830,100,NVIDIA-NVIDIA H100 NVL,0,true,0,mig:"
HAMI_PROFILE = (
    '{"name":"2g.10gb","memoryMB":9984,"core":29,"sliceCount":2,'
    '"placements":[{"start":0,"size":2},{"start":2,"size":2},{"start":4,"size":2}]}'
)

int32 = st.integers(0, 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x17F), max_size=12)
placements = st.builds(Placement, uint32, uint32)
profiles = st.builds(
    MigProfileInfo,
    name=text.filter(bool),
    memory_mb=int32,
    core=int32,
    slice_count=uint32,
    placements=st.lists(placements, max_size=4).map(tuple),
)


@st.composite
def node_devices(draw):
    mode = draw(st.sampled_from(["", "hami-core", "mig", "mps"]))
    return NodeDevice(
        id=draw(text.filter(bool)),
        index=draw(st.integers(0, 2**63 - 1)),
        count=draw(int32),
        devmem=draw(int32),
        devcore=draw(int32),
        type=draw(text),
        numa=draw(st.integers(-(2**63), 2**63 - 1)),
        mode=mode,
        health=draw(st.booleans()),
        mig_profiles=tuple(draw(st.lists(profiles, max_size=3))) if mode == "mig" else (),
    )


device_lists = st.lists(node_devices(), max_size=5, unique_by=lambda d: d.id).map(tuple)


@given(device_lists)
def test_round_trip(devices):
    encoded = encode_node_register(devices)
    assert decode_node_register(encoded) == devices
    assert encode_node_register(decode_node_register(encoded)) == encoded


def test_hami_json_example_round_trips_byte_for_byte():
    (device,) = decode_node_register(HAMI_JSON_1950)
    assert device == NodeDevice(
        id="GPU-..",
        count=10,
        devmem=143771,
        devcore=100,
        type="NVIDIA H200 NVL",
        mode="hami-core",
        health=True,
    )
    assert encode_node_register([device]) == HAMI_JSON_1950


def test_mig_profiles_follow_mode_and_precede_health():
    value = (
        '[{"id":"GPU-a","index":1,"count":7,"devmem":81920,"devcore":100,"type":"NVIDIA A100-SXM4-80GB",'
        f'"mode":"mig","migProfiles":[{HAMI_PROFILE}],"health":true}}]'
    )
    (device,) = decode_node_register(value)
    assert device.is_mig
    assert device.mig_profiles == (
        MigProfileInfo("2g.10gb", 9984, 29, 2, (Placement(0, 2), Placement(2, 2), Placement(4, 2))),
    )
    assert encode_node_register([device]) == value


def test_omitempty_leaves_out_zero_false_and_empty():
    assert encode_node_register([NodeDevice(id="GPU-a")]) == '[{"id":"GPU-a"}]'
    (device,) = decode_node_register('[{"id":"GPU-a"}]')
    assert (device.index, device.numa, device.health, device.mode) == (0, 0, False, "")


def test_profile_keys_are_always_written():
    device = NodeDevice(id="GPU-a", mode="mig", mig_profiles=(MigProfileInfo("1g.5gb", 0, 0, 0),))
    encoded = json.loads(encode_node_register([device]))
    assert encoded[0]["migProfiles"] == [
        {"name": "1g.5gb", "memoryMB": 0, "core": 0, "sliceCount": 0, "placements": []}
    ]


def test_our_profile_fields_round_trip_and_stay_out_when_unset():
    profile = MigProfileInfo("1g.10gb+me", 9728, 14, 1, (Placement(6, 1),), compute_slices=1, memory_slices=1,
                             flags=("+me",))
    encoded = encode_node_register([NodeDevice(id="GPU-a", mode="mig", mig_profiles=(profile,))])
    raw = json.loads(encoded)[0]["migProfiles"][0]
    assert (raw["computeSlices"], raw["memorySlices"], raw["flags"]) == (1, 1, ["+me"])
    assert decode_node_register(encoded)[0].mig_profiles == (profile,)
    bad = '[{"id":"GPU-a","mode":"mig","migProfiles":[{"name":"x","flags":[1]}]}]'
    with pytest.raises(AnnotationError, match="expected strings"):
        decode_node_register(bad)


def test_unknown_keys_and_nulls_are_tolerated_like_go():
    value = (
        '[{"id":"GPU-a","devicevendor":"NVIDIA","custominfo":{"x":1},"migtemplate":null,'
        '"numa":null,"health":null,"migProfiles":null}]'
    )
    assert decode_node_register(value) == (NodeDevice(id="GPU-a"),)
    assert decode_node_register("null") == ()
    assert decode_node_register("[]") == ()
    assert decode_node_register("") == ()


def test_hami_colon_example():
    (device,) = decode_node_register(HAMI_COLON_1014)
    assert device == NodeDevice(
        id="GPU-3ef99f5d-...",
        index=0,
        count=10,
        devmem=95830,
        devcore=100,
        type="NVIDIA-NVIDIA H100 NVL",
        numa=0,
        mode="mig",
        health=True,
    )


def test_colon_seven_field_form_defaults_to_hami_core():
    devices = decode_node_register(
        "GPU-a,10,16384,100,NVIDIA-Tesla T4,1,false:GPU-b,10,16384,100,NVIDIA-Tesla T4,0,1:"
    )
    assert [(d.id, d.mode, d.numa, d.health, d.index) for d in devices] == [
        ("GPU-a", "hami-core", 1, False, 0),
        ("GPU-b", "hami-core", 0, True, 0),
    ]


def test_colon_form_is_written_back_as_json():
    devices = decode_node_register(HAMI_COLON_1014)
    assert encode_node_register(devices).startswith('[{"id":"GPU-3ef99f5d-...","count":10')


@pytest.mark.parametrize(
    ("value", "part", "needle"),
    [
        ("[{", "at line 1 column 3", "invalid JSON"),
        ('{"id":"GPU-a"}', "top level", "expected a JSON array"),
        ("[1]", "device 0", "expected a JSON object"),
        ('[{"count":1}]', "device 0", "'id' is missing"),
        ('[{"id":""}]', "device 0", "'id' is empty"),
        ('[{"id":"GPU-a","count":"10"}]', "device 0", "'count' is a string '10'; expected an integer"),
        ('[{"id":"GPU-a","count":1.5}]', "device 0", "'count' is a number 1.5"),
        ('[{"id":"GPU-a","devmem":2147483648}]', "device 0", "'devmem' 2147483648 is out of range"),
        ('[{"id":"GPU-a","index":-1}]', "device 0", "'index' -1 is out of range"),
        ('[{"id":"GPU-a","health":"true"}]', "device 0", "expected true or false"),
        (
            '[{"id":"GPU-a","mode":"hami-core","migProfiles":[' + HAMI_PROFILE + "]}]",
            "device 0",
            "only valid on",
        ),
        (
            '[{"id":"GPU-a","mode":"mig","migProfiles":[{"core":1}]}]',
            "device 0 migProfiles[0]",
            "'name' is missing",
        ),
        (
            '[{"id":"GPU-a","mode":"mig","migProfiles":[{"name":"1g.5gb","placements":[{"start":-1}]}]}]',
            "device 0 migProfiles[0] placements[0]",
            "'start' -1 is out of range",
        ),
        ('[{"id":"GPU-a"},{"id":"GPU-a"}]', "device list", "listed twice"),
    ],
)
def test_json_errors_name_the_part(value, part, needle):
    with pytest.raises(AnnotationError) as info:
        decode_node_register(value)
    assert info.value.annotation == names.NODE_REGISTER
    assert info.value.part == part
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{names.NODE_REGISTER}: {part}: ")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("GPU-a,10,1,100,T4,0,true", "neither a JSON array nor a ':'-terminated list"),
        ("GPU-a,10,1,100,T4,0:", "has 6 fields"),
        ("GPU-a,10,1,100,T4,0,true,0:", "has 8 fields"),
        ("GPU-a,ten,1,100,T4,0,true:", "count 'ten' is not an integer"),
        ("GPU-a,10,1,100,T4,0,yes:", "health 'yes' is not a boolean"),
        ("GPU-a,10,1,100,T4,0,true,-1,mig:", "index '-1' is not an integer 0.."),
        ("GPU-a,-10,1,100,T4,0,true:", "count '-10' is not an integer 0.."),
        (",10,1,100,T4,0,true:", "non-empty string"),
        ("GPU-a,1,1,1,T4,0,true:GPU-a,1,1,1,T4,0,true:", "listed twice"),
    ],
)
def test_colon_errors(value, needle):
    with pytest.raises(AnnotationError, match=r"^hami\.io/node-nvidia-register: ") as info:
        decode_node_register(value)
    assert needle in str(info.value)


def test_encoder_refuses_what_it_could_not_decode():
    with pytest.raises(ValueError, match="listed twice"):
        encode_node_register([NodeDevice(id="GPU-a"), NodeDevice(id="GPU-a")])
    with pytest.raises(ValueError, match="only valid on"):
        NodeDevice(id="GPU-a", mode="hami-core", mig_profiles=(MigProfileInfo("1g.5gb", 1, 1, 1),))
    with pytest.raises(ValueError, match="devmem"):
        NodeDevice(id="GPU-a", devmem=-1)


def test_json_escapes_like_go():
    encoded = encode_node_register([NodeDevice(id="GPU-a", type="A<B>&C\u2028")])
    assert encoded == '[{"id":"GPU-a","type":"A\\u003cB\\u003e\\u0026C\\u2028"}]'
    assert decode_node_register(encoded)[0].type == "A<B>&C\u2028"
