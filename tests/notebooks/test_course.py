"""The course runner behind `make course`: notebooks in order, executed copies and HTML kept."""
import nbformat
import pytest

from metalstm.tools import course


def test_the_six_notebooks_in_order():
    names = [p.name[:2] for p in course.course_notebooks()]
    assert names == ["01", "02", "03", "04", "05", "06"]
    assert [p.name[:2] for p in course.course_notebooks(["04", "01"])] == ["01", "04"]
    with pytest.raises(SystemExit, match="starts with 99"):
        course.course_notebooks(["99"])


@pytest.mark.slow
def test_execute_and_render(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "BUILD", tmp_path / "build")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A title"),
                                         nbformat.v4.new_code_cell("print(6 * 7)")])
    src = tmp_path / "01_tiny.ipynb"
    nbformat.write(nb, src)
    seconds, error = course.execute(src, tmp_path / "build" / "notebooks")
    assert error is None and seconds > 0
    done = nbformat.read(tmp_path / "build" / "notebooks" / "01_tiny.ipynb", as_version=4)
    assert done.cells[1].outputs[0]["text"] == "42\n"
    for fmt in ("html", "slides"):
        page = course.render(tmp_path / "build" / "notebooks" / "01_tiny.ipynb", fmt)
        assert "A title" in page.read_text() and "42" in page.read_text()


@pytest.mark.slow
def test_a_failing_notebook_is_kept_and_reported(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")])
    src = tmp_path / "02_bad.ipynb"
    nbformat.write(nb, src)
    _, error = course.execute(src, tmp_path / "out")
    assert "broken on purpose" in error
    assert (tmp_path / "out" / "02_bad.ipynb").exists()
