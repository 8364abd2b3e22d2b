"""booktools.widgets: precomputed galleries whose controls are linked in the browser (jslink).

The fast tests check the widget tree and its saved state; the browser test builds a one-page
book with a gallery and moves its slider in headless Chromium with no kernel, as a reader does.
"""
import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
from ipywidgets.embed import embed_data
from ipywidgets.widgets.widget_link import Link

from booktools import widgets
from test_book import Visit, build_scratch_book, serve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEMPERATURES = [0.25, 0.5, 1.0, 2.0, 4.0]


def draw_softmax(ax, temperature):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
    p = np.exp(logits / temperature)
    ax.bar(range(5), p / p.sum())
    ax.set(title=f"T = {temperature:g}", xlabel="token", ylabel="probability", ylim=(0, 1))


def draw_masked(ax, mask, scale):
    weights = np.random.default_rng(0).random((6, 6)) ** scale
    if mask == "causal":
        weights = np.tril(weights)
    ax.imshow(weights, vmin=0, vmax=1)
    ax.set_title(f"{mask}, scale {scale:g}")


def link_ends(link):
    (source, source_trait), (target, target_trait) = link.source, link.target
    return source, source_trait, target, target_trait


@pytest.fixture(scope="module")
def gallery():
    return widgets.slider_gallery(TEMPERATURES, draw_softmax, description="temperature", value=1.0)


def test_gallery_has_one_png_image_per_value(gallery):
    images = gallery.stack.children
    assert isinstance(gallery.stack, ipywidgets.Stack)
    assert len(images) == len(TEMPERATURES)
    for image in images:
        assert isinstance(image, ipywidgets.Image) and image.format == "png"
        assert bytes(image.value).startswith(PNG_MAGIC)
        assert 0 < len(image.value) <= widgets.MAX_BYTES
    assert len({bytes(image.value) for image in images}) == len(images), "each value draws a different frame"


def test_slider_is_linked_in_the_browser_to_the_stack(gallery):
    (slider,) = gallery.controls
    assert isinstance(slider, ipywidgets.SelectionSlider)
    assert [label for label, _ in slider.options] == ["0.25", "0.5", "1", "2", "4"]
    assert slider.index == gallery.stack.selected_index == 2, "value=1.0 is shown first"
    (link,) = gallery.links
    # jslink, not link/observe: a Link model runs in the browser and needs no kernel.
    assert isinstance(link, Link) and link._model_name == "LinkModel"
    assert link_ends(link) == (slider, "index", gallery.stack, "selected_index")
    assert list(gallery.children) == [slider, gallery.stack]


def test_saved_widget_state_holds_the_link(gallery):
    state = embed_data(views=[gallery])["manager_state"]["state"]
    links = [m["state"] for m in state.values() if m["model_name"] == "LinkModel"]
    source = f"IPY_MODEL_{gallery.controls[0].model_id}"
    target = f"IPY_MODEL_{gallery.stack.model_id}"
    assert {"source": [source, "index"], "target": [target, "selected_index"]}.items() <= \
        next(s for s in links if s["source"][0] == source).items()


def test_frames_are_drawn_off_pyplot():
    before = plt.get_fignums()
    widgets.slider_gallery([1, 2], draw_softmax)
    assert plt.get_fignums() == before, "a frame left a pyplot figure that the notebook would show"


def test_labels_can_be_strings_or_a_function():
    gallery = widgets.slider_gallery([1, 2], draw_softmax, labels=lambda t: f"T={t}")
    assert [label for label, _ in gallery.controls[0].options] == ["T=1", "T=2"]
    gallery = widgets.slider_gallery([1, 2], draw_softmax, labels=["cold", "hot"])
    assert [label for label, _ in gallery.controls[0].options] == ["cold", "hot"]
    with pytest.raises(ValueError, match="distinct"):
        widgets.slider_gallery([1, 2], draw_softmax, labels=["same", "same"])
    with pytest.raises(ValueError, match="labels for"):
        widgets.slider_gallery([1, 2], draw_softmax, labels=["only one"])


def test_sizes_are_bounded():
    with pytest.raises(ValueError, match="max_bytes"):
        widgets.slider_gallery([1], draw_softmax, max_bytes=500)
    with pytest.raises(ValueError, match="at most"):
        widgets.slider_gallery(list(range(1, widgets.MAX_FRAMES + 2)), draw_softmax)
    with pytest.raises(ValueError, match="no values"):
        widgets.slider_gallery([], draw_softmax)


def test_full_colour_png_is_larger_than_the_palette_one():
    fig = plt.figure()
    draw_softmax(fig.add_subplot(), 1.0)
    full, palette = widgets.figure_png(fig, colors=None), widgets.figure_png(fig)
    plt.close(fig)
    assert full.startswith(PNG_MAGIC) and palette.startswith(PNG_MAGIC)
    assert len(palette) < len(full)


def test_toggle_slider_gallery_links_buttons_to_outer_and_slider_to_every_inner_stack():
    masks, scales = ["none", "causal"], [0.5, 1, 2]
    gallery = widgets.toggle_slider_gallery(masks, scales, draw_masked, option_description="mask",
                                            description="scale", option="causal", value=2)
    buttons, slider = gallery.controls
    assert isinstance(buttons, ipywidgets.ToggleButtons) and isinstance(slider, ipywidgets.SelectionSlider)
    assert [label for label, _ in buttons.options] == masks
    outer = gallery.stack
    assert len(outer.children) == len(masks) and outer.selected_index == buttons.index == 1
    for inner in outer.children:
        assert isinstance(inner, ipywidgets.Stack) and len(inner.children) == len(scales)
        assert inner.selected_index == slider.index == 2
        assert all(bytes(image.value).startswith(PNG_MAGIC) for image in inner.children)
    ends = {(id(s), st, id(t), tt) for s, st, t, tt in map(link_ends, gallery.links)}
    assert ends == {(id(buttons), "index", id(outer), "selected_index")} | {
        (id(slider), "index", id(inner), "selected_index") for inner in outer.children}
    # The frames differ across options at the same slider position.
    assert bytes(outer.children[0].children[0].value) != bytes(outer.children[1].children[0].value)


def test_small_multiples_draws_one_panel_per_value():
    fig = widgets.small_multiples(TEMPERATURES, draw_softmax, ncols=3, suptitle="softmax")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(TEMPERATURES) and len(fig.axes) == 6
    assert [ax.get_title() for ax in visible] == [f"T = {t:g}" for t in TEMPERATURES]
    plt.close(fig)


# --- in a browser, with no kernel ------------------------------------------------------------

GALLERY_PAGE = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# Gallery

```{code-cell} ipython3
import numpy as np
from booktools.widgets import toggle_slider_gallery

def draw(ax, mask, scale):
    weights = np.random.default_rng(0).random((6, 6)) ** scale
    ax.imshow(np.tril(weights) if mask == "causal" else weights, vmin=0, vmax=1)
    ax.set_title(f"{mask}, scale {scale:g}")

toggle_slider_gallery(["none", "causal"], [0.5, 1, 2], draw, option_description="mask",
                      description="scale", value=1)
```
"""


@pytest.mark.slow
@pytest.mark.browser
def test_gallery_switches_images_in_the_static_page(tmp_path, browser):
    site = build_scratch_book(tmp_path, {"gallery": GALLERY_PAGE})

    shown = """() => Array.from(document.querySelectorAll('.widget-image'))
                     .filter(img => img.offsetParent !== null).map(img => img.src)"""
    with serve(site) as base:
        visit = Visit(browser, base, "gallery.html")
        try:
            page = visit.page
            page.wait_for_selector(".widget-slider", timeout=15_000)
            first = page.evaluate(shown)
            page.locator(".widget-slider [role=slider]").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => ({shown})()[0] !== {first!r}[0]", timeout=5_000)
            after_slider = page.evaluate(shown)
            page.get_by_role("button", name="causal").click()
            page.wait_for_function(f"() => ({shown})()[0] !== {after_slider!r}[0]", timeout=5_000)
            after_toggle = page.evaluate(shown)
            readout = page.locator(".widget-readout").inner_text()
            problems = visit.problems()
        finally:
            visit.close()
    assert len(first) == len(after_slider) == len(after_toggle) == 1, "exactly one frame is visible"
    assert len({first[0], after_slider[0], after_toggle[0]}) == 3
    assert readout == "2", "the slider kept its position when the mask changed"
    assert not problems, problems
