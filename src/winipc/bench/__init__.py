"""``winipc bench``: winipc's mechanisms against their peers, between two real processes.

The scenarios live in a registry (:mod:`winipc.bench.registry`); the built-in ones are in
:mod:`winipc.bench.scenarios`. The click command is :func:`winipc.bench.cli.bench`, also
run by ``python -m winipc.bench``. See docs/bench.md for what is measured and how.
"""

from winipc.bench.registry import (
    METRICS,
    Endpoint,
    Listening,
    Metric,
    Scenario,
    Setup,
    all_scenarios,
    get,
    register,
    select,
    unregister,
)

__all__ = [
    "METRICS",
    "Endpoint",
    "Listening",
    "Metric",
    "Scenario",
    "Setup",
    "all_scenarios",
    "get",
    "register",
    "select",
    "unregister",
]
