import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers import plots  # noqa: E402


def _figure():
    plots.use_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def test_save_figure_writes_png_and_pdf_byte_stable(tmp_path):
    fig = _figure()
    first = [p.read_bytes() for p in plots.save_figure(fig, "demo", tmp_path)]
    second = [p.read_bytes() for p in plots.save_figure(fig, "demo", tmp_path)]
    assert {p.name for p in tmp_path.iterdir()} == {"demo.png", "demo.pdf"}
    assert first == second
    assert first[0][:8] == b"\x89PNG\r\n\x1a\n" and first[1][:5] == b"%PDF-"
    plt.close(fig)


def test_save_figure_refuses_paths_as_names(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        plots.save_figure(_figure(), "../escape", tmp_path)
