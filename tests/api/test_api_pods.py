"""parse_pod: HAMi's request derivation (hami-behaviour §3.1) and the pod annotations (§2.6)."""

from fractions import Fraction
from types import SimpleNamespace

import pytest

from hami.api import (
    ContainerRequest,
    GpuPolicy,
    Mode,
    NodePolicy,
    RequestDefaults,
    RequestError,
    container_names,
    names,
    parse_pod,
    parse_quantity,
)


def pod(*containers, init=(), annotations=None):
    return {
        "metadata": {"name": "p", "namespace": "default", "annotations": annotations or {}},
        "spec": {"initContainers": list(init), "containers": list(containers)},
    }


def ctr(name="main", limits=None, requests=None):
    resources = {}
    if limits is not None:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = requests
    return {"name": name, "image": "cuda", "resources": resources}


def one(limits=None, requests=None, defaults=None) -> ContainerRequest:
    (request,) = parse_pod(pod(ctr(limits=limits, requests=requests)), defaults).containers
    return request


GPU, MEM, PCT, CORES = (
    names.RESOURCE_COUNT,
    names.RESOURCE_MEMORY,
    names.RESOURCE_MEMORY_PERCENTAGE,
    names.RESOURCE_CORES,
)


# --- derivation table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "requests", "defaults", "expected"),
    [
        # count only: neither memory given → 100 % of the device (defaultMemory 0)
        ({GPU: "1"}, None, RequestDefaults(), (1, 0, 100, 0)),
        # count from requests when limits lack it
        (None, {GPU: "2"}, RequestDefaults(), (2, 0, 100, 0)),
        # limits win over requests, resource by resource
        ({GPU: "1", MEM: "1000"}, {GPU: "3", MEM: "2000", CORES: "30"}, RequestDefaults(), (1, 1000, 0, 30)),
        # gpumem × memoryFactor
        ({GPU: "1", MEM: "4"}, None, RequestDefaults(memory_factor=1024), (1, 4096, 0, 0)),
        # gpumem 0 → as if unset
        ({GPU: "1", MEM: "0"}, None, RequestDefaults(), (1, 0, 100, 0)),
        # defaultMemory applies when neither is given
        ({GPU: "1"}, None, RequestDefaults(default_memory=2048), (1, 2048, 0, 0)),
        # defaultMemory is not multiplied by memoryFactor (HAMi)
        ({GPU: "1"}, None, RequestDefaults(default_memory=2048, memory_factor=2), (1, 2048, 0, 0)),
        # percentage
        ({GPU: "1", PCT: "50"}, None, RequestDefaults(), (1, 0, 50, 0)),
        # percentage above 100 clamped
        ({GPU: "1", PCT: "150"}, None, RequestDefaults(), (1, 0, 100, 0)),
        # percentage <= 0 ignored → default applies
        ({GPU: "1", PCT: "0"}, None, RequestDefaults(default_memory=512), (1, 512, 0, 0)),
        ({GPU: "1", PCT: "-5"}, None, RequestDefaults(), (1, 0, 100, 0)),
        # both given: gpumem wins
        ({GPU: "1", MEM: "3000", PCT: "50"}, None, RequestDefaults(), (1, 3000, 0, 0)),
        # gpucores, and the defaultCores fallback
        ({GPU: "1", CORES: "25"}, None, RequestDefaults(), (1, 0, 100, 25)),
        ({GPU: "1"}, None, RequestDefaults(default_cores=10), (1, 0, 100, 10)),
        # gpucores above 100 clamped (HAMi clamps in Fit)
        ({GPU: "1", CORES: "250"}, None, RequestDefaults(), (1, 0, 100, 100)),
        # only mem / cores / percentage → defaultGPUNum devices
        ({MEM: "1000"}, None, RequestDefaults(), (1, 1000, 0, 0)),
        ({CORES: "20"}, None, RequestDefaults(default_gpu_num=2), (2, 0, 100, 20)),
        ({PCT: "30"}, None, RequestDefaults(), (1, 0, 30, 0)),
        # ... unless defaultGPUNum is 0
        ({MEM: "1000"}, None, RequestDefaults(default_gpu_num=0), (0, 0, 0, 0)),
        # explicit zero count: no GPU, whatever else is written
        ({GPU: "0", MEM: "1000"}, None, RequestDefaults(), (0, 0, 0, 0)),
        # no GPU resource at all
        ({"cpu": "1", "memory": "1Gi"}, None, RequestDefaults(), (0, 0, 0, 0)),
        # Kubernetes quantity spellings and plain ints
        ({GPU: 2, MEM: "8k"}, None, RequestDefaults(), (2, 8000, 0, 0)),
        ({GPU: "1e0", MEM: "2Ki"}, None, RequestDefaults(), (1, 2048, 0, 0)),
        ({GPU: "1000m"}, None, RequestDefaults(), (1, 0, 100, 0)),
    ],
)
def test_derivation(limits, requests, defaults, expected):
    r = one(limits, requests, defaults)
    assert (r.count, r.memory_mib, r.memory_percent, r.cores) == expected
    if r.count:
        assert (r.memory_mib > 0) != (r.memory_percent > 0)  # the Request contract


def test_custom_resource_names():
    defaults = RequestDefaults(
        resource_count_name="example.com/vgpu", resource_memory_name="example.com/vmem"
    )
    r = one({"example.com/vgpu": "1", "example.com/vmem": "100", GPU: "5"}, defaults=defaults)
    assert (r.count, r.memory_mib) == (1, 100)


def test_containers_are_indexed_init_first():
    p = pod(
        ctr("app-a", {GPU: "1"}),
        ctr("app-b"),
        init=[ctr("init-a"), ctr("init-b", {GPU: "1", MEM: "100"})],
    )
    request = parse_pod(p)
    assert [(c.name, c.index, c.init, c.count) for c in request.containers] == [
        ("init-a", 0, True, 0),
        ("init-b", 1, True, 1),
        ("app-a", 2, False, 1),
        ("app-b", 3, False, 0),
    ]
    assert request.wants_gpus
    assert container_names(p) == ["init-a", "init-b", "app-a", "app-b"]


def test_pod_without_gpu_asks():
    request = parse_pod(pod(ctr("web", {"cpu": "1"})))
    assert not request.wants_gpus
    assert request.mode is Mode.ANY
    assert not parse_pod({}).wants_gpus
    assert not parse_pod({"spec": {"containers": [{"name": "x", "resources": None}]}}).wants_gpus


# --- invalid values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "defaults", "resource", "needle"),
    [
        ({GPU: "1.5"}, RequestDefaults(), GPU, "'1.5' is not a whole number; allowed: 0..2147483647 devices"),
        ({GPU: "500m"}, RequestDefaults(), GPU, "is not a whole number"),
        ({GPU: "-1"}, RequestDefaults(), GPU, "'-1' is negative"),
        ({GPU: "lots"}, RequestDefaults(), GPU, "'lots' is not a Kubernetes quantity"),
        ({GPU: "3G"}, RequestDefaults(), GPU, "is 3000000000 devices, out of range"),
        ({GPU: True}, RequestDefaults(), GPU, "is not a Kubernetes quantity"),
        ({GPU: 1.0}, RequestDefaults(), GPU, "is not a Kubernetes quantity"),
        ({GPU: "1", MEM: "abc"}, RequestDefaults(), MEM, "'abc' is not a Kubernetes quantity"),
        ({GPU: "1", MEM: "-100"}, RequestDefaults(), MEM, "is negative; allowed: 0..2147483647 MiB"),
        (
            {GPU: "1", MEM: "8Gi"},
            RequestDefaults(),
            MEM,
            "out of range; allowed: 0..2147483647 MiB; gpumem is",
        ),
        (
            {GPU: "1", MEM: "2147483647"},
            RequestDefaults(memory_factor=2),
            MEM,
            "out of range; allowed: 0..1073741823 MiB",
        ),
        ({GPU: "1", MEM: "1.5"}, RequestDefaults(), MEM, "is not a whole number"),
        ({GPU: "1", PCT: "12.5"}, RequestDefaults(), PCT, "allowed: 1..100 percent"),
        ({GPU: "1", CORES: "-1"}, RequestDefaults(), CORES, "is negative; allowed: 0..100 percent"),
        ({GPU: "1", CORES: "half"}, RequestDefaults(), CORES, "is not a Kubernetes quantity"),
    ],
)
def test_invalid_values_name_container_resource_and_range(limits, defaults, resource, needle):
    with pytest.raises(RequestError) as info:
        parse_pod(pod(ctr("trainer", limits)), defaults)
    err = info.value
    assert err.container == "trainer"
    assert err.resource == resource
    assert err.allowed
    assert str(err).startswith(f"container 'trainer': {resource} ")
    assert needle in str(err)


def test_gpumem_error_says_what_to_write():
    with pytest.raises(RequestError, match=r'e\.g\. "8192" \(not "8Gi"\)'):
        one({GPU: "1", MEM: "8Gi"})
    with pytest.raises(RequestError, match="memoryFactor 4 multiplies it"):
        one({GPU: "1", MEM: "x"}, defaults=RequestDefaults(memory_factor=4))


def test_init_container_errors_name_the_init_container():
    with pytest.raises(RequestError) as info:
        parse_pod(pod(ctr("app"), init=[ctr("setup", {GPU: "x"})]))
    assert info.value.container == "setup"


def test_malformed_values_are_ignored_when_no_gpu_is_asked():
    assert one({GPU: "0", MEM: "abc"}).count == 0


# --- annotations ---------------------------------------------------------------------------------


def annotated(**annotations):
    return parse_pod(pod(ctr(limits={GPU: "1"}), annotations=annotations))


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("mig", Mode.MIG),
        ("hami-core", Mode.HAMI_CORE),
        (" mig ", Mode.MIG),
        ("mig,hami-core", Mode.ANY),
        ("hami-core, mig", Mode.ANY),
        ("", Mode.ANY),
    ],
)
def test_vgpu_mode(value, mode):
    assert annotated(**{names.VGPU_MODE: value}).mode is mode


@pytest.mark.parametrize("value", ["mps", "MIG", "mig,mps", "exclusive"])
def test_vgpu_mode_rejects_unknown_modes(value):
    with pytest.raises(RequestError) as info:
        annotated(**{names.VGPU_MODE: value})
    err = info.value
    assert err.container is None and err.resource == names.VGPU_MODE
    assert str(err).startswith(f"pod: {names.VGPU_MODE} {value!r} names a mode hami does not schedule")
    assert "'mig', 'hami-core'" in err.allowed


def test_type_and_uuid_lists():
    request = annotated(
        **{
            names.USE_GPU_TYPE: "A100, H100 ,",
            names.NOUSE_GPU_TYPE: "T4",
            names.USE_GPU_UUID: "GPU-a,GPU-b",
            names.NOUSE_GPU_UUID: " ",
        }
    )
    assert request.use_gpu_types == ("A100", "H100")
    assert request.nouse_gpu_types == ("T4",)
    assert request.use_gpu_uuids == ("GPU-a", "GPU-b")
    assert request.nouse_gpu_uuids == ()  # empty means no constraint (HAMi)


@pytest.mark.parametrize(
    ("value", "policy"), [("binpack", NodePolicy.BINPACK), (" spread ", NodePolicy.SPREAD), ("", None)]
)
def test_node_policy(value, policy):
    assert annotated(**{names.NODE_SCHEDULER_POLICY: value}).node_policy == policy
    assert annotated().node_policy is None


def test_node_policy_rejects_others():
    with pytest.raises(RequestError, match="allowed: 'binpack' or 'spread'") as info:
        annotated(**{names.NODE_SCHEDULER_POLICY: "random"})
    assert info.value.resource == names.NODE_SCHEDULER_POLICY


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("binpack", GpuPolicy.BINPACK),
        ("spread", GpuPolicy.SPREAD),
        ("spread, spread", GpuPolicy.SPREAD),
        ("", None),
    ],
)
def test_gpu_policy(value, policy):
    assert annotated(**{names.GPU_SCHEDULER_POLICY: value}).gpu_policy == policy


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("topology-aware", "uses HAMi policy 'topology-aware', which hami does not support"),
        ("mutex", "nvidia.com/gpucores: 100"),
        ("binpack,numa", "uses HAMi policy 'numa'"),
        ("binpack,spread", "names both binpack and spread"),
        ("fastest", "names an unknown policy 'fastest'"),
    ],
)
def test_gpu_policy_rejects_what_is_not_supported(value, needle):
    with pytest.raises(RequestError) as info:
        annotated(**{names.GPU_SCHEDULER_POLICY: value})
    assert info.value.resource == names.GPU_SCHEDULER_POLICY
    assert "allowed: 'binpack' or 'spread'" in str(info.value)
    assert needle in str(info.value)


# --- defaults and quantities ---------------------------------------------------------------------


def test_defaults_from_config_reads_same_named_attributes():
    config = SimpleNamespace(
        resource_count_name="nvidia.com/gpu",
        resource_memory_name="nvidia.com/gpumem",
        resource_memory_percentage_name="nvidia.com/gpumem-percentage",
        resource_core_name="nvidia.com/gpucores",
        default_memory=100,
        default_cores=5,
        default_gpu_num=2,
        memory_factor=3,
        overwrite_env=True,
    )
    defaults = RequestDefaults.from_config(config)
    assert (
        defaults.default_memory,
        defaults.default_cores,
        defaults.default_gpu_num,
        defaults.memory_factor,
    ) == (100, 5, 2, 3)
    assert RequestDefaults.from_config(SimpleNamespace()) == RequestDefaults()


def test_defaults_from_the_real_nvidia_config():
    config = pytest.importorskip("hami.devices.config")
    if not hasattr(config, "NvidiaConfig"):
        pytest.skip("hami.devices.config has no NvidiaConfig yet")
    assert RequestDefaults.from_config(config.NvidiaConfig()) == RequestDefaults()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(default_cores=101),
        dict(default_memory=-1),
        dict(memory_factor=-1),
        dict(default_gpu_num=True),
        dict(resource_count_name=""),
    ],
)
def test_defaults_validate(kwargs):
    with pytest.raises(ValueError):
        RequestDefaults(**kwargs)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("+2", 2),
        ("-3", -3),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("500m", Fraction(1, 2)),
        ("1k", 1000),
        ("1Ki", 1024),
        ("2Gi", 2 * 2**30),
        ("1E", 10**18),
        ("1e3", 1000),
        ("5E-1", Fraction(1, 2)),
        ("7n", Fraction(7, 10**9)),
        (" 3 ", 3),
        (4, 4),
    ],
)
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "k", "1 k", "1KiB", "0x10", "1e", "1e999", "--1", None, 1.5, True])
def test_not_quantities(text):
    assert parse_quantity(text) is None


def test_request_error_pickles_with_its_fields():
    import pickle

    with pytest.raises(RequestError) as info:
        one({GPU: "x"})
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.container, again.resource, again.allowed, again.value, str(again)) == (
        "main",
        GPU,
        info.value.allowed,
        "x",
        str(info.value),
    )
