"""The plane's parts that need no binaries: configuration rendering, credentials, binary lookup."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from hami.sim.cluster import HAMI_MANAGED_RESOURCES, hami_extender
from hami.sim.kubescheduler import ExtenderConfig, SchedulerConfig
from hami.sim.realkube import BinariesMissing, RealPlane, find_binaries, kube_scheduler_configuration
from hami.sim.realkube.pki import Pki


def test_scheduler_configuration_is_the_chart_stanza() -> None:
    config = SchedulerConfig(scheduler_name="hami-scheduler", extenders=(hami_extender("https://127.0.0.1:443"),),
                             initial_backoff=0.5, max_backoff=10.0)
    doc = kube_scheduler_configuration(config, kubeconfig="/k/sched.kubeconfig")
    assert doc["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert doc["profiles"] == [{"schedulerName": "hami-scheduler"}]
    assert doc["leaderElection"]["resourceName"] == "hami-scheduler"
    assert doc["clientConnection"] == {"kubeconfig": "/k/sched.kubeconfig"}
    assert (doc["podInitialBackoffSeconds"], doc["podMaxBackoffSeconds"]) == (1, 10)  # whole seconds only
    (ext,) = doc["extenders"]
    assert ext["urlPrefix"] == "https://127.0.0.1:443"
    assert ext["enableHTTPS"] is True and ext["tlsConfig"] == {"insecure": True}
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"]) == ("filter", "prioritize", "bind")
    assert ext["nodeCacheCapable"] is True and ext["httpTimeout"] == "30s" and ext["weight"] == 10
    assert ext["managedResources"] == [{"name": r, "ignoredByScheduler": True} for r in HAMI_MANAGED_RESOURCES]
    assert yaml.safe_load(yaml.safe_dump(doc)) == doc


def test_scheduler_configuration_leaves_out_unimplemented_verbs() -> None:
    ext = ExtenderConfig(url_prefix="http://127.0.0.1:80", prioritize_verb="", bind_verb="", http_timeout=0)
    (stanza,) = kube_scheduler_configuration(SchedulerConfig(extenders=(ext,)))["extenders"]
    assert "prioritizeVerb" not in stanza and "bindVerb" not in stanza and "httpTimeout" not in stanza
    assert stanza["enableHTTPS"] is False and "tlsConfig" not in stanza


def test_pki_tokens_and_node_certificates(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    rows = list(csv.reader(pki.tokens_file.read_text().splitlines()))
    assert {row[1]: row[3] for row in rows} == {"admin": "system:masters", "system:kube-scheduler": "",
                                                 "hami": "system:masters"}
    assert len({row[0] for row in rows}) == 3  # distinct tokens

    kubeconfig = yaml.safe_load(pki.node_kubeconfig("gpu-7", "https://127.0.0.1:6443").read_text())
    pem = base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"])
    subject = x509.load_pem_x509_certificate(pem).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:gpu-7"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"

    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)

    cert, _key = pki.serving_pair("webhook", "hami-scheduler.kube-system.svc")
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    assert issued.issuer == x509.load_pem_x509_certificate(pki.ca_file.read_bytes()).subject
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["hami-scheduler.kube-system.svc"]


def test_missing_binaries_say_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HAMI_KUBE_BIN", raising=False)
    monkeypatch.setenv("HAMI_KUBE_CACHE", str(tmp_path))
    monkeypatch.setenv("HAMI_KUBE_VERSION", "v1.99.0")
    with pytest.raises(BinariesMissing, match=r"make kube.*no build has been attempted"):
        find_binaries()
    (tmp_path / "v1.99.0").mkdir()
    (tmp_path / "v1.99.0" / "build.log").write_text("go: network unreachable\n")
    with pytest.raises(BinariesMissing, match=str(tmp_path / "v1.99.0" / "build.log")):
        find_binaries()


def test_use_scheduler_keeps_what_is_fixed_at_start(tmp_path: Path) -> None:
    """A suite may swap the extender of a shared plane, not the scheduler's name or its default profile."""
    plane = RealPlane(tmp_path, scheduler=SchedulerConfig(scheduler_name="hami-scheduler", default_profile=True))
    assert plane.use_scheduler(plane.scheduler) is False  # the same: nothing restarts (nothing is running)
    with pytest.raises(ValueError, match="scheduler_name is fixed"):
        plane.use_scheduler(SchedulerConfig(scheduler_name="other", default_profile=True))
    with pytest.raises(ValueError, match="default_profile is fixed"):
        plane.use_scheduler(SchedulerConfig(scheduler_name="hami-scheduler", default_profile=False))
