"""The Ray Train path: TorchTrainer + DDP + our hook, 2 workers on a local Ray (slow: ~1 min)."""
import pytest

pytestmark = pytest.mark.slow


def test_ray_train_trains_logreg_with_two_workers(tmp_path):
    ray = pytest.importorskip("ray")
    from experiments.cli import main
    from simulator.history import History

    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rc = main(["train", "--backend", "ray-train", "--workers", "2", "--workload", "logreg", "--method", "ef21",
                   "--compressor", "topk:ratio=0.1", "--rounds", "10", "--out", str(tmp_path)])
    finally:
        ray.shutdown()
    assert rc == 0
    rows = History.read(tmp_path)
    assert [r["round"] for r in rows] == list(range(1, 11))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["bits_up"] > 0
