"""Family 1: sequence and time-series models (issue 7; specs/workloads.md entries 1, 13, 14, 19,
29, 31, 44, 53). ``WORKLOADS[id] = ("module:Class", "paper")``, listed in table order."""

WORKLOADS: dict[str, tuple[str, str]] = {
    "pvrnn": ("experiments.workloads.sequence.pvrnn:PVRNN",
              "A Novel Predictive-Coding-Inspired Variational RNN Model for Online Prediction and Recognition"),
    "s5_ptd": ("experiments.workloads.sequence.s5_ptd:S5PTD",
               "Robustifying State-space Models for Long Sequences via Approximate Diagonalization"),
    "tpgn": ("experiments.workloads.sequence.tpgn:TPGN",
             "PGN: The RNN's New Successor is Effective for Long-Range Time Series Forecasting"),
    "dbpm": ("experiments.workloads.sequence.dbpm:DBPM",
             "Towards Enhancing Time Series Contrastive Learning: A Dynamic Bad Pair Mining Approach"),
    "seld_synth": ("experiments.workloads.sequence.seld_synth:SELDSynth",
                   "A Dataset of Dynamic Reverberant Sound Scenes with Directional Interferers for Sound Event "
                   "Localization and Detection"),
    "lnn_linkload": ("experiments.workloads.sequence.lnn_linkload:LNNLinkLoad",
                     "Liquid Neural Network-based Adaptive Learning vs. Incremental Learning for Link Load "
                     "Prediction amid Concept Drift due to Network Failures"),
    "coral_rca": ("experiments.workloads.sequence.coral_rca:CORAL",
                  "Disentangled Causal Graph Learning for Online Unsupervised Root Cause Analysis"),
    "hiss_hier_ssm": ("experiments.workloads.sequence.hiss_hier_ssm:HiSS",
                      "Hierarchical State Space Models for Continuous Sequence-to-Sequence Modeling"),
}
