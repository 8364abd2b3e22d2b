"""llmref.widgets.option_slider_gallery: toggle buttons over options, each with its own slider,
all linked in the browser (jslink), so the gallery works in the static book without a kernel."""
import ipywidgets
import numpy as np
import pytest
from ipywidgets.embed import embed_data

from llmref import widgets

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
    state = embed_data(views=[gallery])["manager_state"]["state"]
    assert sum(s["model_name"] == "LinkModel" for s in state.values()) == 1 + len(VALUES)


def test_too_many_frames_are_refused():
    with pytest.raises(ValueError, match="at most"):
        widgets.option_slider_gallery(["a"], {"a": list(range(13))}, lambda ax, o, v: None)
