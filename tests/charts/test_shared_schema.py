"""The two charts' schemas define ports, CIDRs, egress rules and database URLs alike."""

import json
from pathlib import Path

CHARTS = Path(__file__).resolve().parents[2] / "charts"
SHARED = {"port", "portName", "cidr", "networkPolicyEgressRule", "databaseUrl", "duration"}


def test_the_definitions_both_charts_use_are_the_same():
    api, controller = (json.loads((CHARTS / chart / "values.schema.json").read_text())["definitions"]
                       for chart in ("rates-api", "rates-controller"))
    assert SHARED <= set(api) & set(controller)
    # A fix to one copy (a CIDR the API accepts and the controller refuses) reaches both.
    assert {name: api[name] for name in set(api) & set(controller)} == \
        {name: controller[name] for name in set(api) & set(controller)}
