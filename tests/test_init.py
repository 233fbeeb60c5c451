"""petloc/__init__.py: importing petloc turns off albumentations' update check (a request to PyPI on
its import) for this process and its children, unless the environment already says otherwise.

The oracle is Python's audit hooks, in a fresh interpreter: every URL request, name look-up and
socket connection is recorded and refused, so no test reaches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys

requests = []

def refuse_network(event, args):
    if event in ("urllib.Request", "socket.getaddrinfo", "socket.connect"):
        requests.append(event)
        raise ConnectionRefusedError("no network in this test")

sys.addaudithook(refuse_network)
import {module}
print(json.dumps({{"requests": requests, "variable": os.environ.get("NO_ALBUMENTATIONS_UPDATE")}}))
"""


def probe(module: str, variable: str | None) -> dict:
    """Import ``module`` in a child whose environment has NO_ALBUMENTATIONS_UPDATE=``variable``
    (None: unset); the network requests it tried and the variable's value afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if variable is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = variable
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "variable", "requests", "after"),
    [
        # petloc's own import of albumentations asks nothing, and its children inherit the setting
        ("petloc.data.augment", None, [], "1"),
        # the probe sees the check when it happens: albumentations alone asks PyPI ...
        ("albumentations", None, ["urllib.Request"], None),
        # ... and so does petloc when the user turned the check back on
        ("petloc.data.augment", "0", ["urllib.Request"], "0"),
    ],
)
def test_importing_petloc_turns_off_the_albumentations_update_check(
    module: str, variable: str | None, requests: list[str], after: str | None
) -> None:
    outcome = probe(module, variable)
    assert outcome == {"requests": requests, "variable": after}
