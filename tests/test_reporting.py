"""Provenance stamping of tables and figures."""

import numpy as np
import pandas as pd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dapo.reporting import Provenance, save_figure, save_table, write_provenance  # noqa: E402


def _prov(**kw):
    base = dict(profile="synthetic", seed=3, backbone="dapo-compact", pretrained="synthetic",
                smoke=False, commit="abc1234")
    return Provenance(**{**base, **kw})


def test_table_csv_has_full_precision_and_provenance_columns(tmp_path):
    df = pd.DataFrame({"auroc": [0.123456789, 0.5]}, index=pd.Index(["a", "b"], name="product"))
    path = save_table(df, "t1", tmp_path, _prov(), caption="Table 1")
    back = pd.read_csv(path, index_col="product")
    assert back.loc["a", "auroc"] == 0.123457  # 6 significant digits, not the display rounding
    assert (back["profile"] == "synthetic").all() and (back["seed"] == 3).all()
    assert (back["backbone"] == "dapo-compact/synthetic").all()
    assert "commit" not in back.columns  # so the same seed regenerates identical CSVs after a commit
    md = (tmp_path / "t1.md").read_text()
    assert "SYNTHETIC profile" in md and "commit=abc1234" in md and "0.1" in md


def test_table_csv_is_byte_identical_across_commits(tmp_path):
    df = pd.DataFrame({"ap": np.linspace(0, 1, 5)})
    a = save_table(df, "a", tmp_path, _prov(commit="1111111")).read_bytes()
    b = save_table(df, "b", tmp_path, _prov(commit="2222222")).read_bytes()
    assert a == b


def test_smoke_and_paper_labels():
    assert "smoke" in _prov(smoke=True).label
    assert "ViT-L-14-336" in _prov(profile="paper").label
    assert "not a reproduction" in _prov().label


def test_figure_and_provenance_json(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, "f", tmp_path, _prov())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("seed=3" in t.get_text() for t in fig.texts)
    meta = write_provenance(tmp_path, _prov(), note="x").read_text()
    assert '"commit": "abc1234"' in meta and '"note": "x"' in meta


def test_markdown_flattens_multi_level_rows_and_columns(tmp_path):
    rows = pd.MultiIndex.from_tuples([("visa", "DAPO"), ("visa", "MultiADS")], names=["test", "method"])
    cols = pd.MultiIndex.from_tuples([("DAPO", "auroc"), ("DAPO", "f1")], names=["method", "metric"])
    save_table(pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=rows, columns=cols), "m", tmp_path, _prov())
    md = (tmp_path / "m.md").read_text()
    assert "| test   | method   |   DAPO / auroc |" in md
    assert "('visa'" not in md
