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


def _luminance(color) -> float:
    """Relative luminance (WCAG) of a colour: what is left of it in a greyscale print."""
    import matplotlib.colors as mc
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in mc.to_rgb(color)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_the_models_stay_apart_in_greyscale_and_have_markers():
    from helpers.models import COLORS, MARKERS, VARIANTS
    grey = sorted(_luminance(COLORS[m]) for m in VARIANTS)
    assert min(b - a for a, b in zip(grey, grey[1:])) >= 0.1, grey
    assert len({MARKERS[m] for m in VARIANTS}) == len(VARIANTS)


def test_a_figure_too_wide_or_with_tiny_text_is_refused(tmp_path):
    plots.use_style()
    wide, ax = plt.subplots(figsize=(11, 3))
    with pytest.raises(ValueError, match="11.00 inches wide"):
        plots.save_figure(wide, "wide", tmp_path)
    labelled, ax = plt.subplots(figsize=(6, 3))
    ax.set_yticks([0.5], ["a label long enough to push the saved figure far beyond the width of the page"])
    with pytest.raises(ValueError, match="inches wide with its labels"):
        plots.save_figure(labelled, "labelled", tmp_path)
    small, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "tiny", fontsize=5)
    with pytest.raises(ValueError, match=r"text of \[5.0\] points"):
        plots.save_figure(small, "small", tmp_path)
    plt.close("all")


def test_committed_figures_embed_truetype_fonts_not_type3():
    from conftest import REPO
    pdfs = sorted((REPO / "figures").glob("*.pdf"))
    assert len(pdfs) >= 18
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Type3" not in data, f"{pdf.name} uses Type 3 fonts"


def test_an_exported_figure_leaves_its_title_to_the_caption(tmp_path):
    import helpers as H
    import matplotlib.pyplot as plt

    def draw(title):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        if title:
            fig.suptitle(title)
        return fig
    titled, plain = draw("A title"), draw(None)
    a = H.plots.save_figure(titled, "titled", tmp_path / "a")
    b = H.plots.save_figure(plain, "titled", tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert titled._suptitle.get_text() == "A title"          # the notebook still shows it
    plt.close("all")
