"""The control plane's credentials: one CA, the API server's serving certificate, client
certificates for nodes, the service-account signing key, static tokens and kubeconfigs.

A real cluster identifies kubelets by client certificates (`system:node:<name>` in group
`system:nodes`), which the Node authorizer and the NodeRestriction admission plugin key on; the
CA here signs those on demand, so nodes can join a running plane. Everything else (kubectl, the
kube-scheduler, our components) authenticates with a static bearer token from `tokens.csv`,
fixed at API-server start. Certificates come from `trustme` (a CA and leaf certificates with the
right extensions), the service-account key from `cryptography`.
"""

from __future__ import annotations

import base64
import csv
import secrets
from dataclasses import dataclass
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

FRONT_PROXY_CLIENT = "front-proxy-client"
SERVING_HOSTS = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


@dataclass(frozen=True)
class Identity:
    """A token user: name, and the groups RBAC sees."""

    user: str
    groups: tuple[str, ...] = ()


# Who gets a token. `admin` is kubectl's and the tests' user; `system:kube-scheduler` is the
# identity the bootstrap RBAC policy gives the scheduler's rights to; `hami` runs our scheduler
# extender and node agents until the chart's ServiceAccount and roles exist (then: their rules).
ADMIN = Identity("admin", ("system:masters",))
KUBE_SCHEDULER = Identity("system:kube-scheduler")
HAMI = Identity("hami", ("system:masters",))
TOKEN_USERS = (ADMIN, KUBE_SCHEDULER, HAMI)


class Pki:
    """Files under `folder`: ca.crt, apiserver.{crt,key}, front-proxy-ca.crt, front-proxy-client.{crt,key},
    sa.{key,pub}, tokens.csv; kubeconfigs on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="hami real-kube test CA")
        self.ca_file = folder / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.serving_cert, self.serving_key = self._leaf("apiserver", *SERVING_HOSTS, common_name="kube-apiserver")
        # the front proxy's CA, as kubeadm sets it up: the API server publishes it (request-header
        # authentication), and components serving their own endpoints (kube-scheduler) read it
        self.front_proxy_ca = trustme.CA(organization_name="hami real-kube front-proxy CA")
        self.front_proxy_ca_file = folder / "front-proxy-ca.crt"
        self.front_proxy_ca.cert_pem.write_to_path(str(self.front_proxy_ca_file))
        self.proxy_client_cert, self.proxy_client_key = self._leaf(
            "front-proxy-client", FRONT_PROXY_CLIENT, common_name=FRONT_PROXY_CLIENT, ca=self.front_proxy_ca)
        self.sa_key, self.sa_pub = self._service_account_key()
        self.tokens = {who.user: secrets.token_hex(16) for who in TOKEN_USERS}
        self.tokens_file = folder / "tokens.csv"
        with open(self.tokens_file, "w", newline="") as out:
            writer = csv.writer(out)
            for who in TOKEN_USERS:
                writer.writerow([self.tokens[who.user], who.user, who.user, ",".join(who.groups)])

    def _leaf(self, stem: str, *hosts: str, common_name: str, organization: str | None = None,
              ca: trustme.CA | None = None) -> tuple[Path, Path]:
        leaf = (ca or self.ca).issue_cert(*hosts, common_name=common_name, organization_name=organization)
        cert, key = self.folder / f"{stem}.crt", self.folder / f"{stem}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return cert, key

    def _service_account_key(self) -> tuple[Path, Path]:
        """ES256 key the API server signs service-account tokens with (required since 1.20)."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_file, pub_file = self.folder / "sa.key", self.folder / "sa.pub"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        pub_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
        return key_file, pub_file

    def serving_pair(self, name: str, *hosts: str) -> tuple[Path, Path]:
        """A serving certificate for one of our components (webhook, extender), signed by the plane's CA."""
        return self._leaf(f"serving-{name}", *(hosts or ("127.0.0.1", "localhost")), common_name=name)

    def token_kubeconfig(self, user: str, server: str) -> Path:
        """A kubeconfig for a token user (one of TOKEN_USERS)."""
        return self._kubeconfig(f"{user.replace(':', '-')}.kubeconfig", server, {"token": self.tokens[user]})

    def node_kubeconfig(self, node: str, server: str) -> Path:
        """A kubeconfig with the client certificate a kubelet of `node` would hold."""
        cert, key = self._leaf(f"node-{node}", node, common_name=f"system:node:{node}", organization="system:nodes")
        return self._kubeconfig(f"node-{node}.kubeconfig", server, {
            "client-certificate-data": _b64(cert.read_bytes()), "client-key-data": _b64(key.read_bytes())})

    def _kubeconfig(self, filename: str, server: str, user: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "real",
            "clusters": [{"name": "real", "cluster": {"server": server,
                                                       "certificate-authority-data": _b64(self.ca.cert_pem.bytes())}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "user"}}],
        }
        path = self.folder / filename
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
