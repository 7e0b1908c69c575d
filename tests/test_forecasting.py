"""The forecasting task's data (the long-term protocol on the real ETT files, the drift generator), its evaluation
modes (independent, online memory, online full model with labels only after their horizon) and the processor."""

import numpy as np
import pytest
import torch

from hf_models import TitansTsConfig, TitansTsForPrediction
from hf_models.data.time_series import drift_series, load_series
from hf_models.tasks import forecasting
from hf_models.tasks.forecasting import error_metrics, evaluate_forecaster
from hf_models.titans_ts import TitansTsProcessor


def test_ett_protocol_on_the_real_files(shared_data):
    """ETTh1: train / validation / test rows [0, 8640) / [8640, 11520) / [11520, 14400); with a context of 336 and a
    horizon of 96 that is 8209 / 2785 / 2785 windows (the counts of the published protocol); ETTm1 four times the
    rows (11425 test windows). The scaler is fit on the training rows only."""
    splits = load_series(shared_data / "ETTh1.csv")
    assert splits.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert splits.bounds == {"train": (0, 8640), "validation": (8640, 11520), "test": (11520, 14400)}
    assert [len(splits.windows(s, 336, 96)) for s in ("train", "validation", "test")] == [8209, 2785, 2785]
    train = splits.values[:8640]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    assert abs(splits.values[8640:].mean()) > 1e-3  # the other rows are scaled with the training statistics
    window = splits.dataset("test", 336, 96)[0]
    assert window["past_values"].shape == (336, 7) and window["future_values"].shape == (96, 7)
    # the first test window's forecast starts at row 11520; its context reaches back into the validation rows
    torch.testing.assert_close(window["future_values"][0], torch.from_numpy(splits.values[11520]))
    minutes = load_series(shared_data / "ETTm1.csv")
    assert minutes.bounds["test"] == (46080, 57600) and len(minutes.windows("test", 336, 96)) == 11425
    raw = np.loadtxt(shared_data / "ETTh1.csv", delimiter=",", skiprows=1, usecols=range(1, 8), max_rows=9000)
    torch.testing.assert_close(splits.denormalize(splits.values[8999]), torch.from_numpy(raw[8999]).float())


def test_series_errors_name_the_problem(tmp_path, shared_data):
    with pytest.raises(ValueError, match="is neither a CSV file nor 'synthetic_drift'"):
        load_series(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("date,a,b\n2020-01-01 00:00:00,1,x\n2020-01-01 01:00:00,2,3\n")
    with pytest.raises(ValueError, match="column 'b' is not numeric"):
        load_series(bad)
    short = tmp_path / "ETTshort.csv"
    short.write_text("date,a\n" + "".join(f"2020-01-01 {h:02d}:00:00,{h}\n" for h in range(20)))
    with pytest.raises(ValueError, match="has 20 rows; the ETT protocol needs 14400"):
        load_series(short)
    splits = load_series(shared_data / "ETTh1.csv")
    with pytest.raises(ValueError, match="too short for a context of 9000"):
        splits.windows("train", 9000, 96)


def test_drift_generator_is_seeded_and_drifts():
    a, b, c = drift_series(3000, 2, seed=1), drift_series(3000, 2, seed=1), drift_series(3000, 2, seed=2)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # the regimes differ: the level of the last tenth is far from that of the first tenth
    assert np.abs(a[-300:].mean(0) - a[:300].mean(0)).max() > 0.5
    splits = load_series("synthetic_drift", drift_length=3000, drift_channels=2, seed=1)
    assert splits.bounds == {"train": (0, 2100), "validation": (2100, 2400), "test": (2400, 3000)}


def _model(**overrides):
    torch.manual_seed(0)
    config = TitansTsConfig(context_length=32, prediction_length=8, num_input_channels=3, patch_length=8,
                            patch_stride=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, segment_length=4, memory_head_dim=8, memory_chunk_size=2,
                            **overrides)  # fmt: skip
    return TitansTsForPrediction(config).eval()


@pytest.fixture(scope="module")
def drift():
    return load_series("synthetic_drift", drift_length=1200, drift_channels=3, seed=0)


def test_online_memory_without_memories_equals_independent(drift):
    """With no memory block there is nothing to carry: mode B scores exactly as mode A (and with memories it
    differs), so the modes differ only by the carried state."""
    plain = _model(neural_memory_layers=[])
    a = evaluate_forecaster(plain, drift, "test", "independent", limit=40)
    b = evaluate_forecaster(plain, drift, "test", "online_memory", limit=40)
    assert a["windows"] == b["windows"] == 40
    assert a["mse"] == pytest.approx(b["mse"], rel=1e-6) and a["mae"] == pytest.approx(b["mae"], rel=1e-6)
    model = _model()
    a = evaluate_forecaster(model, drift, "test", "independent", limit=40)
    b = evaluate_forecaster(model, drift, "test", "online_memory", limit=40)
    assert a["mse"] != pytest.approx(b["mse"], rel=1e-6)


def test_online_full_steps_only_on_windows_whose_horizon_has_passed(drift, monkeypatch):
    """Window t's labels cover the next `prediction_length` steps, so its optimizer step runs before window
    t + prediction_length is forecast and not earlier: the first `prediction_length` forecasts of mode C equal mode
    B's (no step can have happened), later ones differ; with sparse labels only every k-th window steps."""
    horizon, count = 8, 40
    memory_only = evaluate_forecaster(_model(), drift, "test", "online_memory", limit=count)
    recorded = {}

    def capture(predictions, targets):  # the forecasts each evaluation scores
        recorded.setdefault("predictions", []).append(predictions)
        return error_metrics(predictions, targets)

    monkeypatch.setattr(forecasting, "error_metrics", capture)
    evaluate_forecaster(_model(), drift, "test", "online_memory", limit=count)
    full = evaluate_forecaster(_model(), drift, "test", "online_full", online_lr=1e-2, limit=count)
    sparse = evaluate_forecaster(_model(), drift, "test", "online_full", online_lr=1e-2, sparse_step=10, limit=count)
    before, after = recorded["predictions"][0], recorded["predictions"][1]
    torch.testing.assert_close(after[:horizon], before[:horizon])
    assert not torch.allclose(after[horizon:], before[horizon:])
    assert full["online_updates"] == count - horizon  # windows 0 .. count-1-horizon have their labels in time
    assert sparse["online_updates"] == len([i for i in range(count - horizon) if i % 10 == 0])
    assert full["mse"] != memory_only["mse"]


def test_evaluation_options_are_checked(drift):
    model = _model()
    with pytest.raises(ValueError, match=r"mode='online' is not one of"):
        evaluate_forecaster(model, drift, mode="online")
    with pytest.raises(ValueError, match=r"sparse_step=10 applies to mode 'online_full'.*not 'online_memory'"):
        evaluate_forecaster(model, drift, mode="online_memory", sparse_step=10)
    with pytest.raises(ValueError, match="online_lr=0 is invalid"):
        evaluate_forecaster(model, drift, mode="online_full", online_lr=0)
    with pytest.raises(ValueError, match="sparse_step=0 is invalid"):
        evaluate_forecaster(model, drift, mode="online_full", sparse_step=0)
    from transformers import PatchTSTConfig, PatchTSTForPrediction

    stock = PatchTSTForPrediction(PatchTSTConfig(context_length=32, prediction_length=8, num_input_channels=3,
                                                 patch_length=8, patch_stride=8, d_model=8, num_attention_heads=2))  # fmt: skip
    assert evaluate_forecaster(stock, drift, mode="independent", limit=4)["windows"] == 4  # any forecaster in mode A
    with pytest.raises(
        ValueError, match="mode='online_memory' carries a memory state .* PatchTSTForPrediction has none"
    ):
        evaluate_forecaster(stock, drift, mode="online_memory", limit=4)


def test_error_metrics():
    results = error_metrics(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))
    assert results == {"mse": 2.5, "mae": 1.5, "rmse": pytest.approx(2.5**0.5)}


def test_processor_scales_and_restores_units():
    processor = TitansTsProcessor(context_length=4, prediction_length=2, channel_names=["a", "b"], mean=[10.0, -1.0],
                                  std=[2.0, 0.5])  # fmt: skip
    history = torch.tensor([[0.0, 0.0], [10.0, -1.0], [12.0, -0.5], [14.0, 0.0], [16.0, 0.5]])
    scaled = processor(history)["past_values"]
    assert scaled.shape == (1, 4, 2)  # the last context_length steps
    torch.testing.assert_close(scaled[0, 0], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(scaled[0, -1], torch.tensor([3.0, 3.0]))
    restored = processor.post_process(scaled[:, -2:])
    assert restored == [{"a": [14.0, 16.0], "b": [0.0, 0.5]}]
    with pytest.raises(ValueError, match=r"series has 3 channels; this model forecasts 2 \(a, b\)"):
        processor(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="series has 3 time steps; the model reads the last context_length=4"):
        processor(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="std must be positive"):
        TitansTsProcessor(channel_names=["a"], mean=[0.0], std=[0.0])


def test_a_carried_state_that_diverges_is_named_with_its_window(drift, caplog):
    """A memory whose updates diverge (here a learning rate far too large for its keys) makes the carried state
    non-finite after some window: the evaluation warns once, naming it, and records it; a finite run records
    nothing."""
    import transformers

    finite = evaluate_forecaster(_model(), drift, "test", "online_memory", limit=40)
    assert "state_nonfinite_window" not in finite and np.isfinite(finite["mse"])
    transformers.utils.logging.enable_propagation()
    with caplog.at_level("WARNING"):
        diverged = evaluate_forecaster(_model(memory_max_lr=1e4), drift, "test", "online_memory", limit=40)
    window = diverged["state_nonfinite_window"]
    assert 0 <= window < 40 and np.isnan(diverged["mse"])
    assert caplog.text.count("the carried memory state is not finite") == 1
    assert f"after test window {window} of 40" in caplog.text
