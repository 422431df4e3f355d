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
    "noise_diffusion_interp": ("experiments.workloads.generative.noise_diffusion_interp:NoiseDiffusionInterp",
                               "NoiseDiffusion: Correcting Noise for Image Interpolation with Diffusion Models beyond "
                               "Spherical Linear Interpolation"),
    "dire_detect": ("experiments.workloads.generative.dire_detect:DIREDetect", "DIRE for Diffusion-Generated Image Detection"),
    "bdia_inversion": ("experiments.workloads.generative.bdia_inversion:BDIAInversion",
                       "Exact Diffusion Inversion via Bi-directional Integration Approximation"),
    "oms_one_more_step": ("experiments.workloads.generative.oms_one_more_step:OneMoreStep",
                          "One More Step: A Versatile Plug-and-Play Module for Rectifying Diffusion Schedule Flaws "
                          "and Enhancing Low-Frequency Controls"),
    "red_diff_inverse": ("experiments.workloads.generative.red_diff_inverse:REDDiffInverse",
                         "A Variational Perspective on Solving Inverse Problems with Diffusion Models (RED-Diff)"),
}
