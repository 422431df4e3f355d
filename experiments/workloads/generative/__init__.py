"""Family 2: diffusion, score-based and learned-compression models (issue 8; specs/workloads.md
entries 7, 15, 18, 27, 28, 32, 40, 46, 47, 49). ``WORKLOADS[id] = ("module:Class", "paper")``."""

WORKLOADS: dict[str, tuple[str, str]] = {
    "rddm": ("experiments.workloads.generative.rddm:RDDM", "Residual Denoising Diffusion Models"),
    "adjoint_dpm": ("experiments.workloads.generative.adjoint_dpm:AdjointDPM",
                    "AdjointDPM: Adjoint Sensitivity Method for Gradient Backpropagation of Diffusion Probabilistic Models"),
    "dfm_inverse": ("experiments.workloads.generative.dfm_inverse:DFMInverse",
                    "Diffusion with Forward Models: Solving Stochastic Inverse Problems Without Direct Supervision"),
    "stem_video": ("experiments.workloads.generative.stem_video:STEMVideo",
                   "Spatiotemporal Entropy Model is All You Need for Learned Video Compression"),
    "score_sde": ("experiments.workloads.generative.score_sde:ScoreSDE",
                  "Score-Based Generative Modeling through Stochastic Differential Equations"),
}
