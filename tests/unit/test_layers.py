"""Layers import downward only (docs/ARCHITECTURE.md, "Layers"), and nothing imports in a cycle.

The contracts are import-linter's, in pyproject.toml ``[tool.importlinter]``; ``make lint``
runs them and so does this test, so an upward or sideways import fails ``make test`` (what CI
runs) too. Function-level and ``TYPE_CHECKING`` imports count: an import moved into a function
is still an import.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.adapters.user_options import TomlFileUserOptionReader
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[2]

configuration.configure()  # what the lint-imports command does before it checks anything


def contracts() -> dict[str, dict[str, Any]]:
    """pyproject.toml's contracts, read as lint-imports reads them."""
    options = TomlFileUserOptionReader().read_options(str(ROOT / "pyproject.toml"))
    assert options is not None
    return {c["type"]: c for c in options.contracts_options}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("fleetpulse", cache_dir=None)


def kept(contract_class: type, options: dict[str, Any], graph: grimp.ImportGraph) -> bool:
    contract = contract_class(
        name=options["name"],
        session_options={"root_packages": ["fleetpulse"]},
        contract_options=options,
    )
    return bool(contract.check(graph, verbose=False).kept)


def test_lint_imports_passes() -> None:
    """The check `make lint` runs, from the same configuration."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


def test_the_bottom_and_the_top_are_where_the_docs_say() -> None:
    layers = contracts()["layers"]["layers"]
    assert layers[-1] == "contract"
    assert layers[-2].split(" | ")[0] == "sdk"
    assert set(layers[-3].split(" | ")) >= {"processors", "sink", "control", "paging", "devstack"}
    assert layers[0] == "__main__"


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        # the contract reaching up into the SDK
        ("fleetpulse.contract.governance", "fleetpulse.sdk.fleet"),
        # the SDK reaching into the control plane (it used to, for its topic readers)
        ("fleetpulse.sdk.fleet", "fleetpulse.control.plane"),
        # siblings: the control plane into the breaker stage, paging into the alert rules' home
        ("fleetpulse.control.service", "fleetpulse.processors.breakers.machine"),
        ("fleetpulse.paging.config", "fleetpulse.processors.alerts.evaluator"),
        ("fleetpulse.processors.alerts.stage", "fleetpulse.control.plane"),
        # a server layer into the console or the CLI above it, even from inside a function
        ("fleetpulse.control.api", "fleetpulse.console.app"),
        ("fleetpulse.sink.runner", "fleetpulse.cli"),
    ],
)
def test_an_upward_or_sideways_import_breaks_the_layers(
    graph: grimp.ImportGraph, importer: str, imported: str
) -> None:
    options = contracts()["layers"]
    assert kept(LayersContract, options, graph)
    broken = copy.deepcopy(graph)
    broken.add_import(importer=importer, imported=imported)
    assert not kept(LayersContract, options, broken)


def test_a_module_outside_every_layer_breaks_the_layers(graph: grimp.ImportGraph) -> None:
    broken = copy.deepcopy(graph)
    broken.add_module("fleetpulse.helpers")
    assert not kept(LayersContract, contracts()["layers"], broken)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        # inside the SDK: a task importing the fleet that makes it (it uses a Protocol instead)
        ("fleetpulse.sdk.task", "fleetpulse.sdk.fleet"),
        # inside the processors: the windows' figures importing the windows
        ("fleetpulse.processors.figures.aggregate", "fleetpulse.processors.windows.buckets"),
        # the console's app importing its pages (mount.py puts them together)
        ("fleetpulse.console.app", "fleetpulse.console.pages"),
    ],
)
def test_a_cycle_breaks_the_acyclic_contract(
    graph: grimp.ImportGraph, importer: str, imported: str
) -> None:
    options = contracts()["acyclic_siblings"]
    assert kept(AcyclicSiblingsContract, options, graph)
    broken = copy.deepcopy(graph)
    broken.add_import(importer=importer, imported=imported)
    assert not kept(AcyclicSiblingsContract, options, broken)
