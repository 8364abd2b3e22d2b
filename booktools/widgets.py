"""Interactive figures that keep working in the static book, where no Python kernel runs.

A slider whose Python callback redraws a plot is dead in static HTML: nothing is there to run
the callback. These helpers instead draw every frame in advance, one PNG per slider position,
put the PNGs in an ``ipywidgets.Stack`` (which shows one child at a time) and tie the
slider's position to ``Stack.selected_index`` with ``ipywidgets.jslink``. The link runs in the
browser, so moving the slider switches pictures in JupyterLab and in the rendered book alike
(myst-nb saves the widget state into the page; @jupyter-widgets/html-manager, vendored in
book/_static/vendor, renders it).

Usage, with a ``draw(ax, value)`` function that draws one frame on a Matplotlib Axes::

    from booktools.widgets import slider_gallery, small_multiples
    small_multiples([0.5, 1, 2], draw)      # static fallback: all frames side by side
    slider_gallery([0.5, 1, 2], draw, description="temperature")

Keep frames few (at most 12 per slider) and small (each PNG is held to ``max_bytes``): the
page carries every frame, base64-encoded.

Book presentation, not a reference implementation (hence not in llmref); tests in
tests/test_widgets.py and tests/test_widgets_option_sliders.py.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

MAX_FRAMES = 12          # per slider: every frame travels in the page
MAX_BYTES = 40_000       # per PNG: a slider of 12 frames stays under half a megabyte


def figure_png(fig: Figure, dpi: int = 100, colors: int | None = 256) -> bytes:
    """The figure as PNG bytes, optionally reduced to a palette of `colors` (at most 256) colours.

    A palette PNG of a plot is typically a third of the size of a full-colour one and looks
    the same: a plot has few distinct colours, and 256 are enough for a colormap's gradient.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    if colors is None:
        return buffer.getvalue()
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    # Octree quantisation keeps rare colours (a colorbar's gradient is few pixels; median cut
    # merges them into bands). No dithering: its noise compresses badly and looks grainy.
    image = image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def render_frames(values: Sequence[Any], draw: Callable[[Any, Any], Any],
                  figsize: tuple[float, float] = (4.8, 3.4), dpi: int = 100,
                  colors: int | None = 256, max_bytes: int = MAX_BYTES) -> list[bytes]:
    """One PNG per value: a fresh figure with one Axes, on which `draw(ax, value)` draws.

    Figures are made with matplotlib.figure.Figure, not pyplot, so that a notebook does not
    also display every frame as a static image. A frame larger than `max_bytes` raises
    ValueError: lower `dpi`, `figsize` or `colors`.
    """
    frames = []
    for value in values:
        fig = Figure(figsize=figsize, layout="constrained")
        draw(fig.add_subplot(), value)
        png = figure_png(fig, dpi=dpi, colors=colors)
        if len(png) > max_bytes:
            raise ValueError(f"the frame for {value!r} is {len(png)} bytes, over max_bytes={max_bytes}: "
                             "use a smaller dpi, figsize or colors")
        frames.append(png)
    return frames


def _labels(values: Sequence[Any], labels: Sequence[str] | Callable[[Any], str] | None) -> list[str]:
    if labels is None:
        found = [f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values]
    elif callable(labels):
        found = [labels(v) for v in values]
    else:
        found = [str(label) for label in labels]
    if len(found) != len(values):
        raise ValueError(f"{len(found)} labels for {len(values)} values")
    if len(set(found)) != len(found):
        raise ValueError(f"labels must be distinct, got {found}")
    return found


def _stack(frames: list[bytes], index: int) -> ipywidgets.Stack:
    # max_width lets a frame shrink on a narrow screen instead of overflowing the page.
    images = [ipywidgets.Image(value=png, format="png",
                               layout=ipywidgets.Layout(max_width="100%", height="auto"))
              for png in frames]
    return ipywidgets.Stack(children=images, selected_index=index)


def _slider(labels: list[str], index: int, description: str) -> ipywidgets.SelectionSlider:
    # A SelectionSlider shows readable labels ("0.5", "causal"); its synced trait is `index`,
    # a plain integer the browser can copy straight into Stack.selected_index.
    return ipywidgets.SelectionSlider(
        options=[(label, i) for i, label in enumerate(labels)], index=index,
        description=description, continuous_update=True,
        style={"description_width": "initial"}, layout=ipywidgets.Layout(width="min(100%, 32em)"))


def _start(values: Sequence[Any], value: Any) -> int:
    if len(values) == 0:
        raise ValueError("no values to show")
    if len(values) > MAX_FRAMES:
        raise ValueError(f"{len(values)} values: at most {MAX_FRAMES} per slider, since every frame is in the page")
    return 0 if value is None else list(values).index(value)


class Gallery(ipywidgets.VBox):
    """The widget the helpers return: controls above a Stack of images.

    Besides the VBox's children it keeps `controls` (slider, toggle buttons), `stack` (the
    outer Stack) and `links` (the jslink Link widgets), for tests and for further layout.
    """

    def __init__(self, controls: list[ipywidgets.Widget], stack: ipywidgets.Stack,
                 links: list[ipywidgets.Widget]):
        super().__init__(children=[*controls, stack])
        self.controls = controls
        self.stack = stack
        self.links = links


def slider_gallery(values: Sequence[Any], draw: Callable[[Any, Any], Any], description: str = "",
                   labels: Sequence[str] | Callable[[Any], str] | None = None, value: Any = None,
                   **frame_options: Any) -> Gallery:
    """A slider over `values` that shows the frame `draw(ax, value)` drew for each one.

    labels: the slider's readout for each value (strings, or a function of the value);
    value: the value shown first (default the first); frame_options: figsize, dpi, colors,
    max_bytes, passed to render_frames. Works without a kernel: see the module docstring.
    """
    index = _start(values, value)
    stack = _stack(render_frames(values, draw, **frame_options), index)
    slider = _slider(_labels(values, labels), index, description)
    link = ipywidgets.jslink((slider, "index"), (stack, "selected_index"))
    return Gallery([slider], stack, [link])


def toggle_slider_gallery(options: Sequence[Any], values: Sequence[Any],
                          draw: Callable[[Any, Any, Any], Any], option_description: str = "",
                          description: str = "",
                          option_labels: Sequence[str] | Callable[[Any], str] | None = None,
                          labels: Sequence[str] | Callable[[Any], str] | None = None,
                          option: Any = None, value: Any = None, **frame_options: Any) -> Gallery:
    """Two controls: toggle buttons over `options` and a slider over `values`.

    `draw(ax, option, value)` draws one frame. Each option gets its own Stack of frames (one
    per value) inside an outer Stack; the buttons pick the outer Stack's child and the one
    slider is linked to every inner Stack, so switching option keeps the slider's position.
    """
    option_index, index = _start(options, option), _start(values, value)
    inner = [_stack(render_frames(values, lambda ax, v, o=o: draw(ax, o, v), **frame_options), index)
             for o in options]
    outer = ipywidgets.Stack(children=inner, selected_index=option_index)
    buttons = ipywidgets.ToggleButtons(
        options=[(label, i) for i, label in enumerate(_labels(options, option_labels))],
        index=option_index, description=option_description, style={"description_width": "initial"})
    slider = _slider(_labels(values, labels), index, description)
    links = [ipywidgets.jslink((buttons, "index"), (outer, "selected_index"))]
    links += [ipywidgets.jslink((slider, "index"), (stack, "selected_index")) for stack in inner]
    return Gallery([buttons, slider], outer, links)


def small_multiples(values: Sequence[Any], draw: Callable[[Any, Any], Any], ncols: int = 4,
                    panel_size: tuple[float, float] = (2.6, 2.2), suptitle: str | None = None):
    """A static pyplot figure with one panel per value, `draw(ax, value)` in each.

    The fallback shown beside a gallery, so that a page without JavaScript still shows every
    frame. Returns the Figure; unused panels of the last row are hidden.
    """
    nrows = -(-len(values) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             layout="constrained", squeeze=False)
    for ax, value in zip(axes.flat, values):
        draw(ax, value)
    for ax in list(axes.flat)[len(values):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def option_slider_gallery(options: Sequence[Any], values: dict[Any, Sequence[Any]],
                          draw: Callable[[Any, Any, Any], Any], option_description: str = "",
                          descriptions: dict[Any, str] | None = None,
                          option_labels: Sequence[str] | Callable[[Any], str] | None = None,
                          labels: dict[Any, Sequence[str] | Callable[[Any], str]] | None = None,
                          option: Any = None, **frame_options: Any) -> Gallery:
    """Toggle buttons over `options`, each option with a slider over its own `values[option]`.

    Unlike toggle_slider_gallery, whose one slider is shared, each option here has its own
    values, labels and description (a temperature, a k, a p): the buttons pick an option's
    pane (its slider above its Stack of frames) from an outer Stack, and each slider is
    linked to its own Stack. `draw(ax, option, value)` draws one frame. The gallery's
    `sliders` attribute lists the sliders in the order of `options`.
    """
    option_index = _start(options, option)
    panes, sliders, links = [], [], []
    for o in options:
        index = _start(values[o], None)
        stack = _stack(render_frames(values[o], lambda ax, v, o=o: draw(ax, o, v), **frame_options), index)
        slider = _slider(_labels(values[o], (labels or {}).get(o)), index, (descriptions or {}).get(o, ""))
        links.append(ipywidgets.jslink((slider, "index"), (stack, "selected_index")))
        panes.append(ipywidgets.VBox([slider, stack]))
        sliders.append(slider)
    outer = ipywidgets.Stack(children=panes, selected_index=option_index)
    buttons = ipywidgets.ToggleButtons(
        options=[(label, i) for i, label in enumerate(_labels(options, option_labels))],
        index=option_index, description=option_description, style={"description_width": "initial"})
    links.insert(0, ipywidgets.jslink((buttons, "index"), (outer, "selected_index")))
    gallery = Gallery([buttons], outer, links)
    gallery.sliders = sliders
    return gallery
