"""What a set of NetworkPolicies (networking.k8s.io/v1) allows, worked out from the manifests.

The tests' control plane has no network plugin, so no policy is enforced there; this
model of the API's documented semantics is how the tests ask "would this connection be
allowed?" of rendered policies. It covers what the charts use: matchLabels and
matchExpressions selectors, podSelector / namespaceSelector / ipBlock peers, and numbered,
ranged (endPort) and named ports.

A pod is isolated for a direction once any policy of its namespace selects it with that
direction in its policyTypes; an isolated pod's connection is allowed when a rule of one
of those policies allows it (policies add up, they never subtract).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    """One end of a connection: a pod (its labels, namespace, the namespace's labels, its
    named container ports) or, with labels None, an address outside the cluster's pods."""

    labels: dict[str, str] | None
    namespace: str = "default"
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    port_names: dict[str, int] = field(default_factory=dict)  # {name: containerPort}


def address(ip: str) -> Pod:
    """Something that is not a pod, e.g. the API server's endpoint or an RDS instance."""
    return Pod(labels=None, ip=ip)


def pod_of(template: dict, namespace: str = "default") -> Pod:
    """The Pod a pod template (or a Pod manifest) would make."""
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
             if "name" in p}
    return Pod(labels=dict(template["metadata"].get("labels") or {}), namespace=namespace,
               namespace_labels={"kubernetes.io/metadata.name": namespace}, port_names=ports)


def selects(selector: dict | None, labels: dict[str, str] | None) -> bool:
    """A LabelSelector against labels; the empty selector selects everything."""
    if labels is None:
        return False
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": lambda: labels.get(key) in values,
              "NotIn": lambda: labels.get(key) not in values,
              "Exists": lambda: key in labels,
              "DoesNotExist": lambda: key not in labels}[op]()
        if not ok:
            return False
    return True


def _selecting(policies: list[dict], pod: Pod, direction: str) -> list[dict]:
    return [p for p in policies
            if p["metadata"].get("namespace", pod.namespace) == pod.namespace
            and selects(p["spec"]["podSelector"], pod.labels)
            and direction in _policy_types(p)]


def _policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _peer_matches(peer: dict, other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"], strict=False) and not any(
            ip in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
    if other.labels is None:  # selectors name pods only
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str, named: dict[str, int]) -> bool:
    if not rule_ports:  # no ports: every port
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        wanted = p.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):  # a named port of the pod the connection goes to
            if named.get(wanted) == port:
                return True
        elif wanted <= port <= p.get("endPort", wanted):
            return True
    return False


def _allowed(policies: list[dict], selected: Pod, peer: Pod, direction: str, port: int, protocol: str,
             port_names: dict) -> bool:
    """Do the policies that select ``selected`` for ``direction`` ("Egress" or "Ingress")
    let it talk with ``peer`` on ``port``? Not selected at all means yes."""
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = _selecting(policies, selected, direction)
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", selected.namespace)
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key) or []
            if (not peers or any(_peer_matches(p, peer, namespace) for p in peers)) and \
                    _port_matches(rule.get("ports"), port, protocol, port_names):
                return True
    return False


def egress_allowed(policies: list[dict], source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    """May ``source`` open a connection to ``destination``:``port``, as far as the
    policies selecting ``source`` go?"""
    return _allowed(policies, source, destination, "Egress", port, protocol, destination.port_names)


def ingress_allowed(policies: list[dict], destination: Pod, source: Pod, port: int, protocol: str = "TCP") -> bool:
    """May ``source`` connect to ``destination``:``port``, as far as the policies
    selecting ``destination`` go?"""
    return _allowed(policies, destination, source, "Ingress", port, protocol, destination.port_names)


def connection_allowed(policies: list[dict], source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    """Both ends agree: the source's egress and the destination's ingress."""
    # An address outside the cluster (labels None) is selected by no policy: its side agrees.
    return egress_allowed(policies, source, destination, port, protocol) and \
        ingress_allowed(policies, destination, source, port, protocol)
