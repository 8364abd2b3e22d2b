"""booktools.widgets.option_slider_gallery: toggle buttons over options, each with its own slider,
all linked in the browser (jslink), so the gallery works in the static book without a kernel."""
import ipywidgets
import numpy as np
import pytest
from ipywidgets.embed import embed_data

from booktools import widgets

VALUES = {"temperature": [0.5, 1.0, 2.0], "top-k": [1, 3, 5, 10]}


def draw(ax, option, value):
    p = np.exp(np.array([2.0, 1.0, 0.0, -1.0]) / (value if option == "temperature" else 1.0))
    if option == "top-k":
        p[int(value):] = 0
    ax.bar(range(4), p / p.sum())
    ax.set_title(f"{option} {value}")


@pytest.fixture(scope="module")
def gallery():
    return widgets.option_slider_gallery(list(VALUES), VALUES, draw, option_description="strategy",
                                         descriptions={"top-k": "k"}, option="top-k", dpi=40)


def test_each_option_has_its_own_slider_and_frames(gallery):
    (buttons,) = gallery.controls
    assert isinstance(buttons, ipywidgets.ToggleButtons)
    assert [label for label, _ in buttons.options] == list(VALUES)
    assert buttons.index == gallery.stack.selected_index == 1, "option='top-k' is shown first"
    for pane, slider, (option, values) in zip(gallery.stack.children, gallery.sliders, VALUES.items()):
        assert pane.children[0] is slider
        assert [label for label, _ in slider.options] == [f"{v:g}" for v in values]
        frames = pane.children[1].children
        assert len(frames) == len(values) and len({bytes(f.value) for f in frames}) == len(values)
    assert gallery.sliders[1].description == "k" and gallery.sliders[0].description == ""


def test_every_control_is_linked_in_the_browser(gallery):
    ends = {(link.source[0].model_id, link.target[0].model_id) for link in gallery.links}
    (buttons,) = gallery.controls
    assert (buttons.model_id, gallery.stack.model_id) in ends
    for pane, slider in zip(gallery.stack.children, gallery.sliders):
        assert (slider.model_id, pane.children[1].model_id) in ends
    # The saved state holds every widget alive in this process (other tests' too): count
    # only this gallery's links.
    state = embed_data(views=[gallery])["manager_state"]["state"]
    ours = {link.model_id for link in gallery.links}
    assert len(ours) == 1 + len(VALUES)
    assert all(state[i]["model_name"] == "LinkModel" for i in ours)


def test_too_many_frames_are_refused():
    with pytest.raises(ValueError, match="at most"):
        widgets.option_slider_gallery(["a"], {"a": list(range(13))}, lambda ax, o, v: None)


# --- in a browser, with no kernel ------------------------------------------------------------

OPTION_PAGE = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# Strategies

```{code-cell} ipython3
import numpy as np
from booktools.widgets import option_slider_gallery

VALUES = {"temperature": [0.5, 1.0, 2.0], "top-k": [1, 3, 5, 10]}

def draw(ax, option, value):
    p = np.exp(np.array([2.0, 1.0, 0.0, -1.0]) / (value if option == "temperature" else 1.0))
    if option == "top-k":
        p[int(value):] = 0
    ax.bar(range(4), p / p.sum())
    ax.set_title(f"{option} {value}")

option_slider_gallery(list(VALUES), VALUES, draw, option_description="strategy", dpi=40)
```
"""


@pytest.mark.slow
@pytest.mark.browser
def test_buttons_and_each_slider_switch_images_in_the_static_page(tmp_path, browser):
    from test_book import Visit, build_scratch_book, serve

    site = build_scratch_book(tmp_path, {"strategies": OPTION_PAGE})
    shown = """() => Array.from(document.querySelectorAll('.widget-image'))
                     .filter(img => img.offsetParent !== null).map(img => img.src)"""
    with serve(site) as base:
        visit = Visit(browser, base, "strategies.html")
        try:
            page = visit.page
            page.wait_for_selector(".widget-slider", timeout=15_000)
            first = page.evaluate(shown)
            page.get_by_role("button", name="top-k").click()
            page.wait_for_function(f"() => ({shown})()[0] !== {first!r}[0]", timeout=5_000)
            after_button = page.evaluate(shown)
            visible_slider = page.locator(".widget-slider [role=slider]").filter(visible=True)
            visible_slider.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => ({shown})()[0] !== {after_button!r}[0]", timeout=5_000)
            after_slider = page.evaluate(shown)
            problems = visit.problems()
        finally:
            visit.close()
    assert len(first) == len(after_button) == len(after_slider) == 1, "exactly one frame is visible"
    assert len({first[0], after_button[0], after_slider[0]}) == 3
    assert not problems, problems
