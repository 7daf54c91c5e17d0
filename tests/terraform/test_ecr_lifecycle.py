"""The image repositories' lifecycle policy, as terraform renders it, read the way ECR's
documentation says ECR reads it (no AWS here to apply it):

* a rule selects an image only if each of its tag prefixes, or patterns (`*` for any
  characters), matches one of the image's tags;
* an image belongs to the first rule, by priority, that selects it: a rule of lower
  priority cannot expire it.

So a release (a tested build tagged again) must belong to a rule that keeps it, and a
throwaway build to the rule that counts it.
"""

import fnmatch
import shutil

import pytest

from tests.support.infra import TERRAFORM_ROOT, apply_module

MODULE = TERRAFORM_ROOT / "modules" / "ecr"


def selects(rule: dict, tags: list[str]) -> bool:
    selection = rule["selection"]
    if selection["tagStatus"] == "untagged":
        return not tags
    if selection["tagStatus"] == "any":
        return True
    prefixes = selection.get("tagPrefixList", [])
    patterns = selection.get("tagPatternList", [])
    return bool(tags) and all(any(t.startswith(p) for t in tags) for p in prefixes) and all(
        any(fnmatch.fnmatchcase(t, p) for t in tags) for p in patterns)


def owner(policy: dict, tags: list[str]) -> dict | None:
    """The rule that decides the image's fate, or None if no rule selects it."""
    return next((r for r in sorted(policy["rules"], key=lambda r: r["rulePriority"]) if selects(r, tags)), None)


@pytest.fixture(scope="module")
def render(terraform, tmp_path_factory):
    """render(**variables) -> the lifecycle policy of the module's lifecycle.tf."""
    def rendered(**variables) -> dict:
        work = tmp_path_factory.mktemp("ecr-lifecycle") / "lifecycle"
        work.mkdir()
        for name in ("variables.tf", "lifecycle.tf"):
            shutil.copy(MODULE / name, work / name)
        (work / "outputs.tf").write_text('output "policy" {\n  value = jsondecode(local.lifecycle_policy)\n}\n')
        return apply_module(terraform, work, variables, work.parent / "apply")["policy"]

    return rendered


def test_releases_are_kept_and_builds_are_counted(render):
    policy = render()
    priorities = [r["rulePriority"] for r in policy["rules"]]
    assert sorted(priorities) == list(range(1, len(priorities) + 1))

    for tags in (["1.4.0"], ["v1.4.0"], ["dev-3f0c2a1", "1.4.0"], ["pr-12", "v2.0.0-rc.1"]):
        assert owner(policy, tags)["selection"]["countNumber"] >= 10000, tags
    for tags in (["dev-3f0c2a1"], ["pr-12"]):
        rule = owner(policy, tags)
        assert (rule["selection"]["countType"], rule["selection"]["countNumber"]) == ("imageCountMoreThan", 30), tags
    assert owner(policy, [])["selection"]["countType"] == "sinceImagePushed"
    assert owner(policy, ["latest"]) is None  # neither: kept


def test_every_prefix_and_pattern_given_has_its_own_rule(render):
    # One rule with two prefixes would select only images tagged with both.
    policy = render(build_tag_prefixes=["ci-", "feature-", "pr-"], release_tag_patterns=["release-*", "v*"],
                    keep_build_images=5)

    for tag in ("ci-1", "feature-x", "pr-7"):
        assert owner(policy, [tag])["selection"]["countNumber"] == 5, tag
    for tag in ("release-2024.1", "v3"):
        assert owner(policy, [tag, "ci-1"])["selection"]["countNumber"] >= 10000, tag
