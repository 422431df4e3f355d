"""Family 1: sequence and time-series models (issue 7; specs/workloads.md entries 1, 13, 14, 19,
29, 31, 44, 53). ``WORKLOADS[id] = ("module:Class", "paper")``, listed in table order."""

WORKLOADS: dict[str, tuple[str, str]] = {
}
