from napari_comir.cli import main


def test_headless_demo_registers_the_sample_pair(capsys):
    """The README's main job without a GUI: the bundled model registers the sample pair."""
    assert main(["demo", "--headless"]) == 0
    out = capsys.readouterr().out
    assert "success" in out and "corner error" in out
