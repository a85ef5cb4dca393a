"""score-file: chunked pandas scoring equals the scorer on the whole frame; Dask equals pandas exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from safetyml.batch.score_file import read_scores, score_file
from tests.batch_support import FEATURES, make_scorer, synthetic_frame, trained_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("score_file")
    frame = synthetic_frame(6_000, seed=1)
    model = trained_model(synthetic_frame(4_000, seed=2))
    path = folder / "frame.parquet"
    frame.to_parquet(path, index=False, row_group_size=1_000)
    return folder, frame, model, make_scorer(model), path


def test_pandas_engine_keeps_keys_and_matches_the_scorer(setup):
    folder, frame, model, scorer, path = setup
    out = folder / "pandas.parquet"
    result = score_file("incident_risk", path, out, scorer=scorer, batch_size=700, progress=False)
    assert result.rows == len(frame)
    got = read_scores(out)
    keys = [c for c in frame.columns if c not in FEATURES]
    assert list(got.columns[: len(keys)]) == keys
    assert not set(FEATURES) & set(got.columns)
    pd.testing.assert_frame_equal(got[keys], frame[keys])
    whole = scorer.score_features("incident_risk", frame)
    np.testing.assert_array_equal(got["probability"].to_numpy(), model.predict_proba(frame))
    assert got["risk_tier"].tolist() == whole["risk_tier"].tolist()
    assert got["action"].tolist() == whole["action"].tolist()
    assert got["policy_version"].str.startswith(("BR@", "MX@")).all()
    assert (got["model_version"] == "7").all()
    # written incrementally: several row groups, each no bigger than a batch
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups > 1
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 700


def test_explanations_are_the_scorers_reason_codes(setup):
    folder, frame, _, scorer, path = setup
    small = folder / "small.parquet"
    frame.head(300).to_parquet(small, index=False, row_group_size=100)
    out = folder / "explained.parquet"
    score_file("incident_risk", small, out, scorer=scorer, explain=True, k=2, batch_size=128, progress=False)
    got = read_scores(out)
    expected = scorer.score_features("incident_risk", frame.head(300), explain=True, k=2)["reasons"]
    assert got["reasons"].tolist() == json.loads(json.dumps(expected.tolist(), default=str))
    assert all(1 <= len(r) <= 2 for r in got["reasons"] if r)


def test_missing_feature_columns_are_named(setup):
    folder, frame, _, scorer, _ = setup
    bad = folder / "bad.parquet"
    frame.drop(columns=["zone_rate"]).to_parquet(bad, index=False)
    with pytest.raises(ValueError, match="zone_rate"):
        score_file("incident_risk", bad, folder / "never.parquet", scorer=scorer, progress=False)
    assert not (folder / "never.parquet").exists()


@pytest.mark.slow
def test_dask_engine_on_a_local_cluster_equals_the_pandas_engine(setup):
    folder, frame, _, scorer, path = setup
    pandas_out, dask_out = folder / "p.parquet", folder / "d.parquet"
    score_file("incident_risk", path, pandas_out, scorer=scorer, explain=True, progress=False)
    result = score_file(
        "incident_risk",
        path,
        dask_out,
        scorer=scorer,
        explain=True,
        engine="dask",
        n_workers=2,
        processes=True,
        progress=False,
    )
    assert result.engine == "dask" and result.rows == len(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(dask_out), pd.read_parquet(pandas_out), check_exact=True)


def test_a_failing_chunk_stops_the_run_with_its_error(setup, monkeypatch):
    """The reader/writer threads neither swallow an error nor hang on it."""
    import safetyml.batch.score_file as module

    folder, _, _, scorer, path = setup
    real, calls = module.score_chunk, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("chunk 3 failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "score_chunk", flaky)
    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        out = folder / "failed.parquet"
        score_file("incident_risk", path, out, scorer=scorer, batch_size=700, progress=False)
    assert len(calls) == 3
