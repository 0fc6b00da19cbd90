"""The chart as Helm renders it: lint, the Kubernetes schemas, and every configuration file read by
our own loaders (the scheduler's device config, the agent's node config, kube-scheduler's
configuration compared with the stanza both test planes run)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from hami.api import names
from hami.cli import _parser
from hami.deviceplugin.config import NodeConfig, load_node_config
from hami.devices import geometry
from hami.devices.config import NvidiaConfig, load_device_config
from hami.devices.naming import find_model
from hami.scheduler.app import SchedulerConfig
from hami.sim.cluster import HAMI_MANAGED_RESOURCES, hami_extender
from hami.sim.realkube.schedconfig import extender_stanza
from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    OVERRIDES,
    configmap_data,
    container,
    find,
    render,
    render_files,
    strip,
)

# Custom resources: kubernetes-validate ships only the Kubernetes API's own schemas. Each entry is checked to
# really have no bundled schema, so the list cannot hide a built-in kind.
NO_BUNDLED_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
                     ("cert-manager.io/v1", "Issuer")}
LATEST = kubernetes_validate.utils.latest_version()
VERSIONS = ("1.30.0", LATEST)

# The seed's example (dynamic-mig.en.md, "Enabling it"): the ConfigMap entry that switches a node to MIG.
SEED_NODE_CONFIG = {"name": "MIG-NODE-A", "operatingmode": "mig", "filterdevices": {"uuid": [], "index": []}}


def seed_geometries_from_values() -> list[dict[str, Any]]:
    """The seed's knownMigGeometries as values.yaml shows them (commented out between markers)."""
    text = (CHART / "values.yaml").read_text()
    block = text.split("# BEGIN seed knownMigGeometries\n")[1].split("# END seed knownMigGeometries")[0]
    lines = [re.sub(r"^\s*# ?", "", line) for line in block.splitlines()]
    return yaml.safe_load("\n".join(lines))["knownMigGeometries"]


# -- Helm itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", OVERRIDES)
def test_lint_reports_no_errors_and_no_warnings(case: str) -> None:
    report = helm.lint(CHART, OVERRIDES[case], namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("case", OVERRIDES)
def test_renders_the_expected_objects(case: str) -> None:
    objects = render(OVERRIDES[case])
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "hami-scheduler"), ("DaemonSet", "hami-device-plugin"),
            ("ConfigMap", "hami-scheduler-device"), ("ConfigMap", "hami-device-plugin"),
            ("ConfigMap", "hami-scheduler-config"), ("Service", "hami-scheduler-metrics"),
            ("Service", "hami-device-plugin-metrics")} <= kinds
    webhook = OVERRIDES[case].get("admissionWebhook", {}).get("enabled", True)
    cert_manager = OVERRIDES[case].get("admissionWebhook", {}).get("certManager", {}).get("enabled", False)
    assert (("MutatingWebhookConfiguration", "vgpu.hami.io") in kinds) == webhook
    assert (("Service", "hami-scheduler") in kinds) == webhook
    assert any(k == "Certificate" for k, _ in kinds) == cert_manager
    assert any(k == "Job" for k, _ in kinds) == (webhook and not cert_manager)
    assert any(k == "ServiceMonitor" for k, _ in kinds) == (case == "servicemonitor")
    assert (("ConfigMap", "hami-dashboard") in kinds) == (case == "dashboard")
    assert len(kinds) == len(objects), "two objects share a kind and name"


# -- Kubernetes schemas --------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema validation must not fetch anything: any connection attempt fails the test."""
    def refuse(*_args: Any, **_kw: Any) -> None:
        raise AssertionError("schema validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str, no_network: None) -> None:
    """Every object of every override case (each distinct object once), strict: unknown fields fail."""
    seen: dict[str, str] = {}
    for case, values in OVERRIDES.items():
        for obj in render(values):
            body = strip(obj)
            seen.setdefault(json.dumps(body, sort_keys=True), f"{obj['kind']}/{obj['metadata']['name']} "
                                                              f"({obj['__template__']}, values {case})")
    checked = 0
    for text, where in seen.items():
        body = json.loads(text)
        if (body["apiVersion"], body["kind"]) in NO_BUNDLED_SCHEMA:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(body, version, strict=True)
            continue
        try:
            kubernetes_validate.validate(body, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {'.'.join(map(str, err.path))}: {err.message}")
        checked += 1
    assert checked >= 30


def test_a_wrong_manifest_fails_validation() -> None:
    """The check above can fail: a misspelt field of a rendered Deployment is caught."""
    deployment = strip(find(render(), "Deployment", "hami-scheduler"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_the_exemption_list_is_exactly_the_custom_resources_rendered() -> None:
    rendered = {(o["apiVersion"], o["kind"]) for case in OVERRIDES.values() for o in render(case)}
    assert rendered & NO_BUNDLED_SCHEMA == NO_BUNDLED_SCHEMA


# -- kube-scheduler ------------------------------------------------------------------------------


def kube_scheduler_config(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return yaml.safe_load(configmap_data(render(values), "hami-scheduler-config", "config.yaml"))


def test_kube_scheduler_config_names_our_extender_as_the_test_planes_run_it() -> None:
    config = kube_scheduler_config()
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["profiles"] == [{"schedulerName": names.SCHEDULER_NAME}]
    (extender,) = config["extenders"]
    # hami_extender is the stanza the embedded and the real kube-scheduler run in the e2e tests
    assert extender == extender_stanza(hami_extender("https://127.0.0.1:8443"))
    assert extender["filterVerb"] == "filter" and extender["prioritizeVerb"] == "prioritize"
    assert extender["bindVerb"] == "bind" and extender["weight"] == 10 and extender["nodeCacheCapable"] is True
    assert [m["name"] for m in extender["managedResources"]] == list(HAMI_MANAGED_RESOURCES)
    assert all(m["ignoredByScheduler"] for m in extender["managedResources"])


def test_kube_scheduler_elects_on_our_own_lease() -> None:
    election = kube_scheduler_config()["leaderElection"]
    assert election == {"leaderElect": True, "resourceLock": "leases", "resourceName": "hami-scheduler",
                        "resourceNamespace": NAMESPACE, "leaseDuration": "15s", "renewDeadline": "10s",
                        "retryPeriod": "2s"}
    extender = container(find(render(), "Deployment", "hami-scheduler"), "extender")
    assert f"--leader-lease={NAMESPACE}/hami-scheduler" in extender["command"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in extender["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def test_without_the_webhook_the_extender_is_plain_http_and_names_follow_the_values() -> None:
    values = {"admissionWebhook": {"enabled": False}, "resourceNames": {"count": "example.com/gpu"},
              "scheduler": {"extender": {"port": 9000}}}
    (extender,) = kube_scheduler_config(values)["extenders"]
    assert extender["urlPrefix"] == "http://127.0.0.1:9000" and extender["enableHTTPS"] is False
    assert "tlsConfig" not in extender
    assert extender["managedResources"][0]["name"] == "example.com/gpu"
    nvidia = load_device_config(configmap_data(render(values), "hami-scheduler-device", "device-config.yaml")).nvidia
    assert nvidia.resource_count_name == "example.com/gpu"


@pytest.mark.realkube
@pytest.mark.parametrize("case", ["defaults", "webhook-off"])
def test_the_real_kube_scheduler_accepts_the_configuration(case: str, tmp_path: Path) -> None:
    """kube-scheduler decodes its file strictly and validates it (extender weight, verbs, resource names);
    --write-config-to stops after that, before any API call."""
    from tests.realkube.session import require_binaries

    binary = require_binaries().kube_scheduler
    config = tmp_path / "config.yaml"
    config.write_text(configmap_data(render(OVERRIDES[case]), "hami-scheduler-config", "config.yaml"))
    result = subprocess.run([str(binary), f"--config={config}", "--master=https://127.0.0.1:1",
                             f"--write-config-to={tmp_path / 'out.yaml'}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    written = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert written["extenders"][0]["managedResources"][1]["name"] == "nvidia.com/gpumem"
    # and a mistake is caught the same way (the check can fail)
    config.write_text(config.read_text().replace("weight: 10", "weight: 0"))
    bad = subprocess.run([str(binary), f"--config={config}", "--master=https://127.0.0.1:1",
                          f"--write-config-to={tmp_path / 'out2.yaml'}"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "positive weight" in bad.stderr


# -- our configuration files through our loaders --------------------------------------------------


def test_device_config_loads_with_the_schedulers_loader_and_keeps_our_defaults(tmp_path: Path) -> None:
    text = configmap_data(render(), "hami-scheduler-device", "device-config.yaml")
    path = tmp_path / "device-config.yaml"
    path.write_text(text)
    nvidia = SchedulerConfig(device_config_file=str(path)).device_config().nvidia
    assert nvidia == NvidiaConfig()  # HAMi's chart defaults; geometries not given: our built-in ones
    model = find_model("A100-SXM4-80GB")
    assert {g.source for g in geometry.allowed_geometries(model, nvidia)} == {geometry.SOURCE_SEED,
                                                                            geometry.SOURCE_MAXIMAL}


def test_the_seed_geometries_shown_in_values_give_exactly_the_seeds_templates() -> None:
    seed = seed_geometries_from_values()
    text = configmap_data(render({"devices": {"nvidia": {"knownMigGeometries": seed}}}), "hami-scheduler-device",
                          "device-config.yaml")
    nvidia = load_device_config(text).nvidia
    model = find_model("A100-SXM4-80GB")
    got = geometry.allowed_geometries(model, nvidia)
    assert {g.source for g in got} == {geometry.SOURCE_CONFIG}
    assert [g.as_dict() for g in got] == [{"1g.10gb": 7}, {"1g.10gb": 1, "2g.20gb": 3}, {"3g.40gb": 2},
                                          {"7g.80gb": 1}]
    a30 = geometry.allowed_geometries(find_model("A30"), nvidia)
    assert [g.as_dict() for g in a30] == [{"1g.6gb": 4}, {"2g.12gb": 2}, {"4g.24gb": 1}]


def test_a_whole_device_config_file_replaces_the_rendered_one() -> None:
    own = "nvidia:\n  deviceSplitCount: 4\n  resourceCountName: nvidia.com/gpu\n"
    text = configmap_data(render({"devices": {"deviceConfigContent": own}}), "hami-scheduler-device",
                          "device-config.yaml")
    assert load_device_config(text).nvidia.device_split_count == 4


def test_node_config_loads_with_the_agents_loader() -> None:
    text = configmap_data(render(), "hami-device-plugin", "config.json")
    assert json.loads(text) == {"nodeconfig": []}
    assert load_node_config(text, "any-node", NodeConfig()).operating_mode == names.MODE_HAMI_CORE


def test_the_seeds_configmap_example_switches_the_node_to_mig() -> None:
    text = configmap_data(render({"devicePlugin": {"nodeConfig": [SEED_NODE_CONFIG]}}), "hami-device-plugin",
                          "config.json")
    assert load_node_config(text, "MIG-NODE-A", NodeConfig()).operating_mode == names.MODE_MIG
    assert load_node_config(text, "other-node", NodeConfig()).operating_mode == names.MODE_HAMI_CORE


def test_node_config_with_per_gpu_modes_round_trips() -> None:
    entry = {"name": "n1", "operatingmode": "hami-core", "devicemodes": [{"index": [0, 1], "operatingmode": "mig"}]}
    text = configmap_data(render({"devicePlugin": {"nodeConfig": [entry]}}), "hami-device-plugin", "config.json")
    config = load_node_config(text, "n1", NodeConfig())
    assert config.mode_of("GPU-x", 1) == names.MODE_MIG and config.mode_of("GPU-y", 2) == names.MODE_HAMI_CORE


# -- the commands parse with our own parser -------------------------------------------------------


@pytest.mark.parametrize("case", OVERRIDES)
def test_rendered_commands_parse_with_our_cli(case: str) -> None:
    objects = render(OVERRIDES[case])
    extender = container(find(objects, "Deployment", "hami-scheduler"), "extender")["command"]
    agent = container(find(objects, "DaemonSet", "hami-device-plugin"), "agent")["command"]
    assert extender[0] == agent[0] == "hami"
    args = _parser().parse_args(extender[1:])
    assert args.command == "scheduler" and args.scheduler_name == names.SCHEDULER_NAME
    args = _parser().parse_args(agent[1:])
    assert args.command == "device-plugin" and args.config_file == "/config/config.json"


def test_ports_of_services_probes_and_flags_agree() -> None:
    objects = render()
    deployment = find(objects, "Deployment", "hami-scheduler")
    extender, kube_scheduler = container(deployment, "extender"), container(deployment, "kube-scheduler")
    ports = {p["name"]: p["containerPort"] for p in extender["ports"]}
    assert f"--http-bind=0.0.0.0:{ports['extender']}" in extender["command"]
    assert f"--metrics-bind=0.0.0.0:{ports['metrics']}" in extender["command"] and ports["metrics"] == 9395
    # kube-scheduler's liveness is the extender's health (HA: a stepped-down extender restarts it)
    assert kube_scheduler["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": ports["extender"],
                                                          "scheme": "HTTPS"}
    assert extender["livenessProbe"]["tcpSocket"] == {"port": "extender"}  # not restarted by a step-down
    metrics = find(objects, "Service", "hami-scheduler-metrics")["spec"]
    assert metrics["type"] == "NodePort" and metrics["ports"][0]["nodePort"] == 31993
    assert metrics["ports"][0]["targetPort"] == "metrics"
    agent = container(find(objects, "DaemonSet", "hami-device-plugin"), "agent")
    assert {p["name"]: p["containerPort"] for p in agent["ports"]} == {"metrics": 9394}
    assert "--metrics-port=9394" in agent["command"]
    agent_svc = find(objects, "Service", "hami-device-plugin-metrics")["spec"]
    assert agent_svc["ports"][0]["nodePort"] == 31992
    webhook_svc = find(objects, "Service", "hami-scheduler")["spec"]
    assert webhook_svc["selector"]["hami.io/scheduler-role"] == "leader"
    assert webhook_svc["ports"][0] == {"name": "https", "port": 443, "targetPort": "extender", "protocol": "TCP"}


def test_the_agent_mounts_what_it_uses_and_runs_with_sys_admin_only() -> None:
    daemonset = find(render(), "DaemonSet", "hami-device-plugin")
    spec = daemonset["spec"]["template"]["spec"]
    agent = container(daemonset, "agent")
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/var/lib/kubelet/device-plugins"]]["hostPath"]["path"] == "/var/lib/kubelet/device-plugins"
    assert volumes[mounts["/usr/local/vgpu"]]["hostPath"]["path"] == "/usr/local/vgpu"
    assert volumes[mounts["/config"]]["configMap"]["name"] == "hami-device-plugin"
    assert "subPath" not in str(agent["volumeMounts"])  # kubelet refreshes the node config in place
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert "privileged" not in agent["securityContext"] and spec.get("hostPID") is None
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["NVIDIA_MIG_CONFIG_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert spec["nodeSelector"] == {"gpu": "on"}
    (installer,) = spec["initContainers"]
    assert installer["image"] == "docker.io/projecthami/hami:v2.10.0"
    assert [m["mountPath"] for m in installer["volumeMounts"]] == ["/usr/local/vgpu"]
    off = find(render(OVERRIDES["libvgpu-off"]), "DaemonSet", "hami-device-plugin")
    assert "initContainers" not in off["spec"]["template"]["spec"]


def test_a_host_nvml_library_is_mounted_and_named() -> None:
    daemonset = find(render(OVERRIDES["one-replica-clusterip-nvml-host"]), "DaemonSet", "hami-device-plugin")
    agent = container(daemonset, "agent")
    assert "--nvml-library=/usr/local/nvidia-ml/libnvidia-ml.so.1" in agent["command"]
    assert {"name": "nvml", "mountPath": "/usr/local/nvidia-ml", "readOnly": True} in agent["volumeMounts"]
    assert agent["securityContext"] == {"privileged": True}
    assert daemonset["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment", "hami-scheduler")["spec"]["template"]["spec"]


# -- webhook and certificates --------------------------------------------------------------------


def test_webhook_calls_only_for_gpu_pods_and_fails_closed() -> None:
    objects = render()
    (hook,) = find(objects, "MutatingWebhookConfiguration", "vgpu.hami.io")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"] == {"name": "hami-scheduler", "namespace": NAMESPACE,
                                               "path": "/webhook", "port": 443}
    assert hook["rules"][0]["operations"] == ["CREATE"] and hook["rules"][0]["resources"] == ["pods"]
    (condition,) = hook["matchConditions"]
    for resource in HAMI_MANAGED_RESOURCES:
        assert f"'{resource}'" in condition["expression"]
    assert "initContainers" in condition["expression"] and "requests" in condition["expression"]
    ignore = render({"admissionWebhook": {"failurePolicy": "Ignore", "ignoredNamespaces": ["batch"]}})
    (hook,) = find(ignore, "MutatingWebhookConfiguration", "vgpu.hami.io")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["batch"]} in \
        hook["namespaceSelector"]["matchExpressions"]


def test_the_certgen_jobs_make_and_inject_the_secret_the_scheduler_mounts() -> None:
    objects = render()
    volume = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    secret = volume["tls"]["secret"]
    assert secret["items"] == [{"key": "cert", "path": "tls.crt"}, {"key": "key", "path": "tls.key"}]
    create = find(objects, "Job", "hami-scheduler-certgen-create")
    patch = find(objects, "Job", "hami-scheduler-certgen-patch")
    assert create["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert patch["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    create_args = create["spec"]["template"]["spec"]["containers"][0]["args"]
    patch_args = patch["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--secret-name={secret['secretName']}" in create_args
    assert f"--secret-name={secret['secretName']}" in patch_args
    assert f"--host=hami-scheduler,hami-scheduler.{NAMESPACE}.svc" in create_args
    assert "--webhook-name=vgpu.hami.io" in patch_args
    role = find(objects, "ClusterRole", "hami-scheduler-certgen")
    assert role["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                              "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["vgpu.hami.io"],
                              "verbs": ["get", "update"]}]


def test_cert_manager_issues_the_secret_and_injects_the_ca() -> None:
    objects = render(OVERRIDES["cert-manager"])
    certificate = find(objects, "Certificate")
    hook = find(objects, "MutatingWebhookConfiguration", "vgpu.hami.io")
    injected = hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected == f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert f"hami-scheduler.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": find(objects, "Issuer")["metadata"]["name"]}
    volume = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volume["tls"]["secret"] == {"secretName": certificate["spec"]["secretName"]}
    own = render(OVERRIDES["cert-manager-issuer"])
    assert find(own, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "ca"}
    assert not [o for o in own if o["kind"] == "Issuer"]


# -- RBAC ----------------------------------------------------------------------------------------


def test_every_rbac_rule_carries_a_comment_saying_who_needs_it() -> None:
    for path in sorted((CHART / "templates").rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- apiGroups:"):
                assert lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1}: a rule without a comment"


def test_rbac_grants_what_the_code_uses_and_no_wildcards() -> None:
    objects = render()
    rules = {o["metadata"]["name"]: o["rules"] for o in objects if o["kind"] in ("ClusterRole", "Role")}
    for name, rule_list in rules.items():
        for rule in rule_list:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], name
    scheduler = {(r["resources"][0], v) for r in rules["hami-scheduler"] for v in r["verbs"]}
    assert {("nodes", "watch"), ("nodes", "patch"), ("pods", "watch"), ("pods", "patch"),
            ("pods/binding", "create"), ("events", "create")} <= scheduler
    lease = rules["hami-scheduler-leader-election"]
    assert {"resources": ["leases"], "apiGroups": ["coordination.k8s.io"], "resourceNames": ["hami-scheduler"],
            "verbs": ["get", "list", "watch", "update"]} in lease
    agent = {(r["resources"][0], v) for r in rules["hami-device-plugin"] for v in r["verbs"]}
    assert agent == {("nodes", "get"), ("nodes", "patch"), ("pods", "get"), ("pods", "list"), ("pods", "patch"),
                     ("events", "create")}  # no secrets, no configmaps, no watch
    bindings = {o["roleRef"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"}
    assert {"system:kube-scheduler", "system:volume-scheduler"} <= bindings


# -- values.schema.json and the render-time checks --------------------------------------------------


BAD_VALUES = [
    ({"scheduler": {"replicas": 0}}, "/scheduler/replicas"),
    ({"scheduler": {"policy": "fastest"}}, "value must be one of 'fragmentation-aware'"),
    ({"scheduler": {"replica": 3}}, "additional properties 'replica' not allowed"),
    ({"scheduler": {"metrics": {"service": {"nodePort": 9395}}}}, "/scheduler/metrics/service/nodePort"),
    ({"scheduler": {"extender": {"port": 443}}}, "/scheduler/extender/port"),
    ({"admissionWebhook": {"failurePolicy": "ignore"}}, "value must be one of 'Fail', 'Ignore'"),
    ({"devicePlugin": {"nodeConfig": [{"name": "n", "operatingmode": "MIG"}]}},
     "/devicePlugin/nodeConfig/0/operatingmode"),
    ({"devicePlugin": {"nodeConfig": [{"operatingmode": "mig"}]}}, "missing property 'name'"),
    ({"devices": {"nvidia": {"deviceSplitCount": 0}}}, "/devices/nvidia/deviceSplitCount"),
    ({"devices": {"nvidia": {"knownMigGeometries": [{"models": ["A30"], "allowedGeometries": [[{"name": "1g"}]]}]}}},
     "/devices/nvidia/knownMigGeometries/0/allowedGeometries/0/0/name"),
    ({"resourceNames": {"count": "gpu"}}, "/resourceNames/count"),
    ({"serviceMonitor": {"interval": "fifteen"}}, "/serviceMonitor/interval"),
    ({"image": {"repository": ""}}, "/image/repository"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_the_schema_rejects_bad_values_saying_where(values: dict[str, Any], message: str) -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert message in str(err.value)
    with pytest.raises(helm.HelmError):  # and installing them fails the same way
        render_files(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"scheduler": {"lockWaitSeconds": 30}}, "must be below scheduler.extender.httpTimeoutSeconds"),
    ({"scheduler": {"leaderElection": {"renewDeadlineSeconds": 15}}},
     "renewDeadlineSeconds (15) < leaseDurationSeconds"),
    ({"admissionWebhook": {"enabled": False, "certManager": {"enabled": True}}}, "needs admissionWebhook.enabled"),
])
def test_relations_between_values_are_checked_when_rendering(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as err:
        render_files(values)
    assert message in str(err.value)


def test_the_default_values_pass_the_schema() -> None:
    helm.Chart.load(CHART).validate_schema({})
    helm.Chart.load(CHART).validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))


# -- NOTES and dashboard ---------------------------------------------------------------------------


def test_notes_say_how_to_switch_a_node_to_mig() -> None:
    notes = render_files()["hami/templates/NOTES.txt"]
    assert "kubectl -n kube-system edit configmap hami-device-plugin" in notes
    assert '"operatingmode": "mig"' in notes and "GpuResetRequired" in notes and ":31993/metrics" in notes


def test_the_dashboard_configmap_carries_the_dashboard_file() -> None:
    data = find(render(OVERRIDES["dashboard"]), "ConfigMap", "hami-dashboard")
    assert data["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(data["data"]["hami-mig.json"]) == json.loads((CHART / "dashboards" / "hami-mig.json").read_text())
