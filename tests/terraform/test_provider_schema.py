"""Every resource and data source in terraform-eks, checked against the AWS provider's own
schema (see tests/support/provider_schema.py for where it comes from): no argument or
block the provider lacks, no required one left out, and no reference to an attribute the
resource does not export. This is the part of `terraform validate` that needs the
provider plugin."""

import json
import re

import pytest

from tests.support.infra import TERRAFORM_ROOT, parse_hcl
from tests.support.provider_schema import META_ARGUMENTS, Block, Schema, load_schema

_REFERENCE = re.compile(r"(?<![\w.])(data\.)?(aws_[a-z0-9_]+)\.([a-z0-9_-]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def declarations(tree: dict):
    """(kind, type, name, body) of each resource and data block."""
    for kind in ("resource", "data"):
        for entry in tree.get(kind, []):
            for type_name, named in entry.items():
                for name, body in named.items():
                    yield kind, type_name, name, body


def block_problems(body: dict, spec: Block, where: str, top: bool) -> list[str]:
    problems = []
    given = {k for k in body if not k.startswith("__")}
    for key in sorted(given):
        if top and key in META_ARGUMENTS:
            continue
        if key in spec.blocks:
            for nested in body[key] if isinstance(body[key], list) else [body[key]]:
                if isinstance(nested, dict):
                    problems += block_problems(nested, spec.blocks[key], f"{where}.{key}", top=False)
        elif key not in spec.arguments:
            problems.append(f"{where}: the provider has no argument or block {key!r}")
    for key in sorted(spec.required - given):
        problems.append(f"{where}: required {key!r} is missing")
    return problems


def reference_problems(tree: dict, schema: Schema, where: str) -> list[str]:
    """References such as aws_sqs_queue.q.arn anywhere in the parsed file's expressions."""
    problems = []
    for data, type_name, _name, attribute in _REFERENCE.findall(json.dumps(tree)):
        kind = "data" if data else "resource"
        spec = schema.kind(kind).get(type_name)
        if spec is None:
            problems.append(f"{where}: {kind} type {type_name!r} does not exist")
        elif attribute not in spec.exported:
            problems.append(f"{where}: {type_name} exports no attribute {attribute!r}")
    return problems


def problems_in(text: str, schema: Schema, where: str) -> list[str]:
    problems = []
    tree = parse_hcl(text)
    for kind, type_name, name, body in declarations(tree):
        spec = schema.kind(kind).get(type_name)
        if spec is None:
            problems.append(f"{where}: {kind} type {type_name!r} does not exist")
            continue
        problems += block_problems(body, spec, f"{where} {type_name}.{name}", top=True)
    return problems + reference_problems(tree, schema, where)


def test_the_schema_is_the_provider_version_the_stacks_allow(schema):
    version = tuple(int(part) for part in schema.provider_version.split(".")[:2])
    for versions in TERRAFORM_ROOT.rglob("versions.tf"):
        text = versions.read_text()
        if "hashicorp/aws" in text:
            # 6.8 is the first that takes SQS's 1 MiB messages (the dead-letter queue's size).
            [(low_major, low_minor, high)] = re.findall(r'">= (\d+)\.(\d+), < (\d+)\.0"', text)
            assert (int(low_major), int(low_minor)) <= version < (int(high), 0), versions
            assert (int(low_major), int(low_minor)) >= (6, 8), versions
    assert len(schema.resources) > 1000 and "aws_eks_cluster" in schema.resources


def test_every_block_matches_the_provider_schema(schema):
    problems = []
    files = sorted(TERRAFORM_ROOT.rglob("*.tf"))
    assert len(files) > 20
    for path in files:
        problems += problems_in(path.read_text(), schema, str(path.relative_to(TERRAFORM_ROOT)))
    assert problems == [], "\n".join(problems)


def test_the_check_finds_what_validate_would(schema):
    wrong = '''
resource "aws_sqs_queue" "q" {
  name                 = "x"
  visibilty_timeout    = 30
  redrive_policy_typo {}
}

resource "aws_s3_bucket_notification" "n" {
  queue {
    queue_arn = aws_sqs_queue.q.arn
  }
}

resource "aws_iam_role_policy" "p" {
  role   = "r"
  policy = aws_sqs_queue.q.queue_arn
}

data "aws_region" "here" {}

output "o" {
  value = "${data.aws_region.here.nonsense}"
}
'''
    assert problems_in(wrong, schema, "t.tf") == [
        "t.tf aws_sqs_queue.q: the provider has no argument or block 'redrive_policy_typo'",
        "t.tf aws_sqs_queue.q: the provider has no argument or block 'visibilty_timeout'",
        "t.tf aws_s3_bucket_notification.n.queue: required 'events' is missing",
        "t.tf aws_s3_bucket_notification.n: required 'bucket' is missing",
        "t.tf: aws_sqs_queue exports no attribute 'queue_arn'",
        "t.tf: aws_region exports no attribute 'nonsense'",
    ]
