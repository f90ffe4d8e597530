"""benchmarks/reproduce.py's bookkeeping: finished experiments are reported again without rerunning, and the
Results table says which goals are met (the experiments themselves are benchmarks, too long for tests)."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", os.path.join(REPO, "benchmarks", "reproduce.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_row(features, raw):
    return {"experiment": "probe-fashion-mnist", "seconds": 120.0, "started": "2026-12-01 18:00",
            "load_average_after": 2.0,
            "figures": [{"figure": "sparse-coding features (8192): test accuracy", "reference": None, "ours": features},
                        {"figure": "raw pixels: test accuracy", "reference": None, "ours": raw}]}


def test_goals_are_judged_on_the_row(reproduce):
    met, missed = probe_row(0.87, 0.84), probe_row(0.85, 0.84)
    assert reproduce.goal_cell(met, met["figures"][0]) == "≥ raw pixels + 0.02: met"
    assert reproduce.goal_cell(missed, missed["figures"][0]) == "≥ raw pixels + 0.02: **not met**"
    assert reproduce.goal_cell(met, met["figures"][1]) == ""  # the raw-pixel figure has no goal of its own
    table = reproduce.results_section([met], [])
    assert "| `probe-fashion-mnist` | sparse-coding features (8192): test accuracy | — | 0.87 | ≥ raw pixels + 0.02: met |" \
        in table and "2 min in all" in table


def test_a_finished_experiment_is_reported_without_running_it_again(reproduce, tmp_path, monkeypatch):
    calls = []

    def fake_probe(runner, source, epochs):
        calls.append(source)
        return probe_row(0.9, 0.8)

    monkeypatch.setattr(reproduce, "run_probe", fake_probe)
    runner = reproduce.Runner(str(tmp_path))
    first = reproduce.run_experiment(runner, "probe-fashion-mnist", None)
    assert calls == ["builtin:fashion-mnist"] and first["epochs_override"] is None
    saved = json.loads((tmp_path / "results" / "probe-fashion-mnist.json").read_text())
    assert reproduce.finished_row(str(tmp_path), "probe-fashion-mnist", None) == saved
    assert reproduce.finished_row(str(tmp_path), "probe-fashion-mnist", 1) is None  # other --epochs: run again
    assert reproduce.finished_row(str(tmp_path), "probe-mnist", None) is None


def test_a_failed_experiment_is_not_kept(reproduce, tmp_path, monkeypatch):
    def failing(runner, source, epochs):
        raise RuntimeError("'ufl evaluate linear-probe' failed with exit code 1")

    monkeypatch.setattr(reproduce, "run_probe", failing)
    row = reproduce.run_experiment(reproduce.Runner(str(tmp_path)), "probe-mnist", None)
    assert "exit code 1" in row["error"]
    assert reproduce.finished_row(str(tmp_path), "probe-mnist", None) is None


def test_a_preset_with_seeds_reports_their_mean_and_each_seed(reproduce, tmp_path, monkeypatch):
    trained = []

    class FakeRunner(reproduce.Runner):
        def ufl(self, *arguments):
            out = arguments[arguments.index("--out") + 1]
            os.makedirs(out, exist_ok=True)
            seed = int(arguments[arguments.index("--set") + 1].split("=")[1]) if "--set" in arguments else 0
            trained.append(seed)
            with open(os.path.join(out, "metrics.json"), "w") as handle:
                json.dump({"epochs": 200, "wall_seconds": 90.0, "accuracy": [0.979, 0.977, 0.981][seed]}, handle)
            return ""

    monkeypatch.setattr(reproduce, "prepare_data", lambda variant, workdir: str(tmp_path / "data"))
    monkeypatch.setitem(reproduce.EXPERIMENTS, "stacked-ae", {
        **reproduce.EXPERIMENTS["stacked-ae"],
        "figures": [("test accuracy", 0.978, lambda metrics, run_dir: metrics["accuracy"])]})
    row = reproduce.run_experiment(FakeRunner(str(tmp_path)), "stacked-ae", None)
    assert trained == [0, 1, 2] and (tmp_path / "run-stacked-ae-seed2" / "metrics.json").exists()
    mean, per_seed = row["figures"]
    assert mean["figure"] == "test accuracy, mean of seeds 0, 1, 2" and mean["ours"] == pytest.approx(0.979)
    assert per_seed["ours"] == "0.979 / 0.977 / 0.981"
    assert reproduce.goal_cell(row, mean) == "≥ 0.978: met" and reproduce.goal_cell(row, per_seed) == ""
