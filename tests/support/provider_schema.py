"""The AWS provider's resource schema, for checking Terraform code without the provider.

`terraform validate` needs the provider plugin, which cannot be fetched on a machine
without the Terraform registry. The CDK for Terraform publishes, on npm, bindings
generated from that same provider's schema (``@cdktf/provider-aws``, pinned in
versions.json; its package.json names the provider version it was generated from). Its
jsii type assembly lists, for every resource and data source, each argument with its
Terraform name (in the registry link of its docs) and whether it is required, and each
nested block as a struct of its own. That is enough to find an argument the provider does
not have, a required one left out, or a reference to an attribute the resource does not
export.

The 130 MB assembly is reduced once to a small JSON file in
``${XDG_CACHE_HOME:-~/.cache}/rates-platform/``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_LINK = re.compile(r"/docs/(resources|data-sources)/([a-z0-9_]+)#([a-z0-9_]+)")
# Arguments Terraform itself gives every resource block, whatever the provider says.
META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}


@dataclass
class Block:
    arguments: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)
    blocks: dict[str, "Block"] = field(default_factory=dict)
    exported: set[str] = field(default_factory=set)  # what others may reference (top level only)

    def to_json(self) -> dict:
        return {"arguments": sorted(self.arguments), "required": sorted(self.required),
                "blocks": {k: v.to_json() for k, v in self.blocks.items()}, "exported": sorted(self.exported)}

    @classmethod
    def from_json(cls, data: dict) -> "Block":
        return cls(set(data["arguments"]), set(data["required"]),
                   {k: cls.from_json(v) for k, v in data["blocks"].items()}, set(data["exported"]))


@dataclass
class Schema:
    provider_version: str
    resources: dict[str, Block]
    data_sources: dict[str, Block]

    def kind(self, kind: str) -> dict[str, Block]:
        return self.resources if kind == "resource" else self.data_sources


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _struct_fqn(type_ref: dict, types: dict) -> str | None:
    """The struct (a nested block) a property's type names, through unions and collections."""
    if "fqn" in type_ref:
        return type_ref["fqn"] if types.get(type_ref["fqn"], {}).get("datatype") else None
    for inner in type_ref.get("union", {}).get("types", []):
        found = _struct_fqn(inner, types)
        if found:
            return found
    if "collection" in type_ref:
        return _struct_fqn(type_ref["collection"]["elementtype"], types)
    return None


def _reduce(types: dict) -> tuple[dict[str, Block], dict[str, Block]]:
    def block(fqn: str, depth: int = 0) -> Block:
        result = Block()
        for prop in types[fqn].get("properties", []):
            docs = prop.get("docs", {})
            match = _LINK.search(docs.get("summary", "") + docs.get("remarks", ""))
            name = match.group(3) if match else _snake(prop["name"])
            struct = _struct_fqn(prop["type"], types)
            if struct and depth < 12:
                result.blocks[name] = block(struct, depth + 1)
            else:
                result.arguments.add(name)
            if not prop.get("optional"):
                result.required.add(name)
        return result

    resources: dict[str, Block] = {}
    data_sources: dict[str, Block] = {}
    for fqn, spec in types.items():
        if spec.get("kind") != "interface" or "cdktf.TerraformMetaArguments" not in spec.get("interfaces", []):
            continue
        links = [_LINK.search(p.get("docs", {}).get("summary", "")) for p in spec.get("properties", [])]
        link = next((m for m in links if m), None)
        if link is None:
            continue
        top = block(fqn)
        # The generated class beside the config holds a getter for every attribute.
        cls = types.get(fqn.removesuffix("Config"), {})
        top.exported = {_snake(p["name"]) for p in cls.get("properties", [])} | top.arguments | set(top.blocks)
        target = resources if link.group(1) == "resources" else data_sources
        target[f"aws_{link.group(2)}"] = top
    return resources, data_sources


def load_schema() -> Schema:
    """The pinned provider's schema, from the cache or built from the npm package now."""
    from ratesctl.k8s_tools import cache_root, load_versions

    package_version = load_versions()["cdktf_provider_aws"]
    cached = cache_root().parent / f"aws-provider-schema-cdktf-{package_version}.json"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            subprocess.run(["npm", "pack", f"@cdktf/provider-aws@{package_version}", "--silent"], cwd=tmp,
                           check=True, capture_output=True, timeout=600)
            [tarball] = Path(tmp).glob("*.tgz")
            with tarfile.open(tarball) as tar:
                package = json.load(tar.extractfile("package/package.json"))
                assembly = json.load(tar.extractfile("package/.jsii"))
            resources, data_sources = _reduce(assembly["types"])
            reduced = {"provider_version": package["cdktf"]["provider"]["version"],
                       "resources": {k: v.to_json() for k, v in resources.items()},
                       "data_sources": {k: v.to_json() for k, v in data_sources.items()}}
            partial = Path(tmp) / "schema.json"
            partial.write_text(json.dumps(reduced))
            os.replace(partial, cached)
    data = json.loads(cached.read_text())
    return Schema(data["provider_version"],
                  {k: Block.from_json(v) for k, v in data["resources"].items()},
                  {k: Block.from_json(v) for k, v in data["data_sources"].items()})
