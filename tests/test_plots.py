"""RD plots a paper can use: units, MS-SSIM in dB, distinct styles, the legend off the data,
published points marked, vector output."""

from __future__ import annotations

import pytest

from osdic.metrics import plots


@pytest.fixture
def figure(monkeypatch):
    """The figure plot_metric draws, kept open for inspection."""
    kept, close = [], plots.plt.close
    monkeypatch.setattr(plots.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def test_rd_plot_has_units_distinct_styles_a_legend_outside_and_a_pdf(tmp_path, figure):
    curves = {f"model{i}": {"bpp": [0.1, 0.2], "ms_ssim": [0.9, 0.99], "swept": ["λ=1", "λ=2"]} for i in range(12)}
    published = {f"paper{i} (table)": [(0.15, 0.95)] for i in range(8)}
    plots.plot_metric(curves, "ms_ssim", "Kodak", tmp_path / "rd_ms_ssim.png", published, None)
    assert (tmp_path / "rd_ms_ssim.png").is_file() and (tmp_path / "rd_ms_ssim.pdf").is_file()
    [fig] = figure
    ax = fig.axes[0]
    assert "(dB)" in ax.get_ylabel() and "bpp" in ax.get_xlabel()
    ours = ax.lines[0].get_ydata()
    assert ours[1] == pytest.approx(20.0) and ours[0] == pytest.approx(10.0), "−10·log10(1 − MS-SSIM)"
    styles = [(line.get_color(), line.get_marker()) for line in ax.lines]
    assert len(set(styles)) == len(ax.lines) == 20, "no two curves look alike"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sum(label.endswith("published") for label in labels) == 8
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1, "the legend is beside the axes, not over the data"
    assert [t.get_text() for t in ax.texts[:2]] == ["λ=1", "λ=2"], "a sweep's points carry their swept values"


def test_psnr_axis_is_in_db_and_other_metrics_keep_their_values():
    assert plots.axis_label("psnr") == "PSNR (RGB) (dB)"
    assert list(plots.axis_values("lpips_alex", [0.2])) == [0.2]
    assert plots.axis_label("ms_ssim_y").endswith("−10·log10(1 − MS-SSIM) (dB)")
