"""Family 1: sequence and time-series models (issue 7; specs/workloads.md entries 1, 13, 14, 19,
29, 31, 44, 53). ``WORKLOADS[id] = ("module:Class", "paper")``, listed in table order."""

WORKLOADS: dict[str, tuple[str, str]] = {
    "s5_ptd": ("experiments.workloads.sequence.s5_ptd:S5PTD",
               "Robustifying State-space Models for Long Sequences via Approximate Diagonalization"),
    "tpgn": ("experiments.workloads.sequence.tpgn:TPGN",
             "PGN: The RNN's New Successor is Effective for Long-Range Time Series Forecasting"),
    "lnn_linkload": ("experiments.workloads.sequence.lnn_linkload:LNNLinkLoad",
                     "Liquid Neural Network-based Adaptive Learning vs. Incremental Learning for Link Load "
                     "Prediction amid Concept Drift due to Network Failures"),
    "hiss_hier_ssm": ("experiments.workloads.sequence.hiss_hier_ssm:HiSS",
                      "Hierarchical State Space Models for Continuous Sequence-to-Sequence Modeling"),
}
