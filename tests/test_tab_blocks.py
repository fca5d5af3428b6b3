"""The Blocks tab: residual norms, block additions and the logit lens against the trace."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from tab_helpers import build_view, export_with_defaults, refresh_with_defaults, title_of

from components import compare, tab_blocks
from components.common import NO_RUN
from components.plots import plot_text
from explorer.analyses import LENS_DEFAULT_POSITIONS
from gpt2_max.engine import LENS_TOP_K

# The lens runs ln_f and the unembedding in float32 numpy; the MAX graph in float32 too,
# with other summation orders. The bar for probabilities is 1e-4; the tiny random
# model's probabilities are all ~4e-5, so an absolute 1e-4 would pass anything: compare
# relatively instead (measured worst case 2e-7), which implies the absolute bar.
LENS_RTOL = 1e-4


def float64_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def float64_lens(resid, weights, eps):
    """An independent float64 ln_f + wteᵀ, for the intermediate layers the graph does not unembed."""
    x = resid.astype(np.float64)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    x = x * weights["ln_f.weight"] + weights["ln_f.bias"]
    return x @ weights["wte.weight"].astype(np.float64).T


@pytest.fixture(scope="module")
def weights(explorer_service):
    return explorer_service.model.weights


@pytest.fixture(scope="module")
def lens(explorer_service, tiny_run):
    """The Run's logit lens from the MAX analysis graph (tested against numpy in test_analysis)."""
    result, why = explorer_service.analysis(tiny_run, "lens")
    assert result is not None, why
    return result


@pytest.fixture(scope="module")
def tokenizer(explorer_service):
    return explorer_service.tokenizer


def stages(run):
    L = run.config.n_layer
    return [run.trace["blocks.0.hook_resid_pre"]] + [run.trace[f"blocks.{i}.hook_resid_post"] for i in range(L)]


@pytest.mark.parametrize("leave_out_position_0", [True, False])
def test_residual_norms_follow_the_stream(tiny_run, lens, weights, tokenizer, leave_out_position_0):
    norms_fig = tab_blocks.render(tiny_run, lens, tokenizer, 4, leave_out_position_0).norms
    T = tiny_run.n_tokens
    expected = np.stack([np.linalg.norm(s, axis=-1) for s in stages(tiny_run)])  # [L+1, T]
    mean, chosen, last = norms_fig.data
    assert list(mean.x) == ["embed", "after block 0", "after block 1"]
    # The mean counts positions 1..T-1 when position 0 is left out, and the title says so.
    first = 1 if leave_out_position_0 else 0
    np.testing.assert_allclose(mean.y, expected[:, first:].mean(axis=1), rtol=1e-6)
    assert ("position 0 left out of the mean" in norms_fig.layout.title.text) == leave_out_position_0
    assert norms_fig.layout.yaxis.type == "log"
    np.testing.assert_allclose(chosen.y, expected[:, 4], rtol=1e-6)
    np.testing.assert_allclose(last.y, expected[:, T - 1], rtol=1e-6)
    assert chosen.name == tiny_run.labels[4] and tiny_run.labels[T - 1] in last.name
    assert all(f"token {tiny_run.labels[4]}" in text for text in chosen.text)
    assert norms_fig.layout.height
    # The embed stage is wte[ids] + wpe[positions].
    np.testing.assert_allclose(
        expected[0], np.linalg.norm(tiny_run.trace["hook_embed"] + tiny_run.trace["hook_pos_embed"], axis=-1), rtol=1e-5
    )


def test_mean_view_shows_mean_and_last_only(tiny_run, lens, weights, tokenizer):
    norms_fig = tab_blocks.render(tiny_run, lens, tokenizer, tab_blocks.MEAN).norms
    assert len(norms_fig.data) == 2


@pytest.mark.parametrize("leave_out_position_0", [True, False])
@pytest.mark.parametrize("position", [tab_blocks.MEAN, 0, 9])
def test_additions_are_attn_and_mlp_output_norms(tiny_run, lens, weights, tokenizer, position, leave_out_position_0):
    fig = tab_blocks.render(tiny_run, lens, tokenizer, position, leave_out_position_0).additions
    attn_bar, mlp_bar = fig.data
    L = tiny_run.config.n_layer
    attn = np.stack([np.linalg.norm(tiny_run.trace[f"blocks.{i}.hook_attn_out"], axis=-1) for i in range(L)])
    mlp = np.stack([np.linalg.norm(tiny_run.trace[f"blocks.{i}.hook_mlp_out"], axis=-1) for i in range(L)])
    assert fig.layout.yaxis.type == "log"
    if position == tab_blocks.MEAN:
        first = 1 if leave_out_position_0 else 0  # a chosen position is drawn whatever the switch says
        attn, mlp = attn[:, first:].mean(axis=1), mlp[:, first:].mean(axis=1)
    else:
        attn, mlp = attn[:, position], mlp[:, position]
        assert tiny_run.labels[position] in fig.layout.title.text
    assert list(attn_bar.x) == ["block 0", "block 1"]
    np.testing.assert_allclose(attn_bar.y, attn, rtol=1e-6)
    np.testing.assert_allclose(mlp_bar.y, mlp, rtol=1e-6)
    assert fig.layout.barmode == "group"


def test_lens_heatmap_shows_each_layers_top_token_and_probability(tiny_run, lens, weights, tokenizer, full_logits):
    lens_fig = tab_blocks.render(tiny_run, lens, tokenizer).lens
    heat = lens_fig.data[0]
    L, T = tiny_run.config.n_layer, tiny_run.n_tokens
    z = np.asarray(heat.z)
    assert z.shape == (L, T)
    assert list(heat.x) == tiny_run.labels and list(heat.y) == ["after block 0", "after block 1"]
    # Colour: log10 of the probability, from the lowest decade present to 1, with ticks at the decades.
    assert heat.zmax == 0 and heat.zmin == min(np.floor(z.min()), -1)
    # At most 4 ticks (a short colour bar), evenly spaced whole decades from zmin..0, ending at 1.
    ticks = list(heat.colorbar.tickvals)
    assert 2 <= len(ticks) <= 4 and ticks[-1] == 0 and ticks[0] >= heat.zmin and len(set(np.diff(ticks))) == 1
    assert list(heat.colorbar.ticktext) == [f"{10.0**k:g}" for k in ticks] and heat.colorbar.ticktext[-1] == "1"
    probability = np.asarray(heat.customdata)[..., 2].astype(np.float64)  # the hover's probability, the true value
    runners_up = np.asarray(heat.customdata)[..., 3]  # the hover's next LENS_TOP_K - 1 tokens and probabilities

    # Every row against an independent float64 lens; the last row against the model's own logits.
    eps = tiny_run.config.layer_norm_epsilon
    for layer in range(L):
        probs = float64_softmax(float64_lens(tiny_run.trace[f"blocks.{layer}.hook_resid_post"], weights, eps))
        np.testing.assert_allclose(probability[layer], probs.max(axis=-1), rtol=LENS_RTOL, atol=0)
        np.testing.assert_allclose(z[layer], np.log10(probs.max(axis=-1)), rtol=0, atol=LENS_RTOL)
        tops = probs.argmax(axis=-1)
        whole = np.asarray(heat.customdata)[layer, :, 4]  # the hover's top token, whole
        assert list(whole) == [plot_text(tokenizer.token(int(t)).display) for t in tops]
        # The runners-up start with the reference's second token wherever it is clear of the third.
        order = np.argsort(-probs, axis=-1)[:, :3]
        second, third = (
            np.take_along_axis(probs, order[:, 1:2], -1)[:, 0],
            np.take_along_axis(probs, order[:, 2:3], -1)[:, 0],
        )
        for position in np.flatnonzero(second > third * (1 + 4 * LENS_RTOL)):
            named = plot_text(tokenizer.token(int(order[position, 1])).display)
            assert runners_up[layer, position].startswith(f"{named} "), (layer, position)
        assert all(cell.count(" · ") == LENS_TOP_K - 2 for cell in runners_up[layer])
    final = float64_softmax(full_logits)
    np.testing.assert_allclose(probability[-1], final.max(axis=-1), rtol=LENS_RTOL, atol=0)
    whole = np.asarray(heat.customdata)[-1, :, 4]
    assert list(whole) == [plot_text(tokenizer.token(int(t)).display) for t in final.argmax(axis=-1)]
    assert (
        "top next token: %{customdata[4]}" in heat.hovertemplate
        and "%{x}" in heat.hovertemplate
        and "probability %{customdata[2]" in heat.hovertemplate
    )
    assert f"next {LENS_TOP_K - 1}: %{{customdata[3]}}" in heat.hovertemplate


def test_final_prediction_line(tiny_run, lens, weights, tokenizer):
    fig = tab_blocks.render(tiny_run, lens, tokenizer).final
    line = fig.data[0]
    final = float64_softmax(tiny_run.trace["logits"][-1])
    final_id = int(np.argmax(tiny_run.trace["logits"][-1]))
    assert tokenizer.token(final_id).display in line.name
    eps = tiny_run.config.layer_norm_epsilon
    for layer in range(tiny_run.config.n_layer):
        probs = float64_softmax(float64_lens(tiny_run.trace[f"blocks.{layer}.hook_resid_post"][-1:], weights, eps))[0]
        assert line.y[layer] == pytest.approx(probs[final_id], rel=LENS_RTOL, abs=0)
        assert f"rank {1 + int((probs > probs[final_id]).sum())} here" in line.text[layer]
    assert line.y[-1] == pytest.approx(final.max(), rel=LENS_RTOL, abs=0)
    assert fig.layout.yaxis.type == "log"  # from ~1/V in early layers to ~1


def test_out_of_range_positions_are_clamped(tiny_run, lens, weights, tokenizer):
    T = tiny_run.n_tokens
    for raw, expected in ((10_000, T - 1), (-5, 0), ("3", 3), (2.0, 2)):
        got = tab_blocks.render(tiny_run, lens, tokenizer, raw)
        want = tab_blocks.render(tiny_run, lens, tokenizer, expected)
        assert got.additions.to_json() == want.additions.to_json() and got.summary == want.summary
    mean = tab_blocks.render(tiny_run, lens, tokenizer, None)
    assert mean.additions.to_json() == tab_blocks.render(tiny_run, lens, tokenizer, tab_blocks.MEAN).additions.to_json()


def test_without_the_lens_the_tab_says_why(tiny_run, tokenizer):
    why = "the analysis graph is compiling"
    views = tab_blocks.render(tiny_run, why, tokenizer)
    norms, additions, lens_fig, final, summary = views.norms, views.additions, views.lens, views.final, views.summary
    assert lens_fig.layout.annotations[0].text == why and final.layout.annotations[0].text == why
    assert len(norms.data) == 2 and len(additions.data) == 2 and "Residual stream" in summary
    assert "lens_top_ids" not in tab_blocks.tensors(tiny_run, why)


def test_tensors_for_download(tiny_run, lens):
    arrays = tab_blocks.tensors(tiny_run, lens)
    expected = np.stack([np.linalg.norm(s, axis=-1) for s in stages(tiny_run)])
    np.testing.assert_allclose(arrays["residual_norms"], expected, rtol=1e-6)
    assert arrays["lens_top_ids"].shape[:2] == (tiny_run.config.n_layer, tiny_run.n_tokens)
    assert int(arrays["final_token_ids"][-1]) == int(np.argmax(tiny_run.trace["logits"][-1]))


def test_no_run_shows_a_message(lens, tokenizer):
    views = tab_blocks.render(None, lens, tokenizer)
    figures = (views.norms, views.additions, views.lens, views.final)
    assert views.summary == NO_RUN and all(fig.layout.annotations[0].text == NO_RUN for fig in figures)


def test_built_tab_refreshes_after_a_run(explorer_service, tiny_run):
    refresh_with_defaults(tab_blocks, explorer_service, tiny_run)
    path = export_with_defaults(
        tab_blocks, explorer_service, tiny_run, None, LENS_DEFAULT_POSITIONS
    )  # no patching sweep yet
    assert str(path).endswith(".npz")
    with np.load(path) as data:
        assert list(data["token_ids"]) == list(tiny_run.token_ids)


def test_long_texts_lens_the_last_positions(explorer_service, tokenizer, monkeypatch):
    from explorer import analyses as run_module

    monkeypatch.setattr(run_module, "LENS_MAX_POSITIONS", 5)
    run = explorer_service.run("A prompt long enough to be cut to its last five positions")
    lens, why = explorer_service.analysis(run, "lens")
    assert lens is not None, why
    assert lens.start == run.n_tokens - 5 and lens.top_ids.shape == (run.config.n_layer, 5)
    heat = tab_blocks.render(run, lens, tokenizer).lens
    assert list(heat.data[0].x) == run.labels[-5:] and "last 5 positions" in heat.layout.title.text


def test_the_lens_covers_the_width_asked_for_and_each_width_once(explorer_service, tokenizer):
    """The lens opens over the last LENS_DEFAULT_POSITIONS positions (what it costs is what it
    shows); a wider choice covers more, computing its rows once per Run. The wider lens's last
    columns are the narrower one's: the same rows through the same graph (chunked differently,
    so probabilities agree to float32 rounding, 1e-6)."""
    text = " ".join(f"word{i}" for i in range(40))
    run = explorer_service.run(text)
    assert run.n_tokens > 64 > LENS_DEFAULT_POSITIONS
    narrow, why = explorer_service.analysis(run, "lens", positions=LENS_DEFAULT_POSITIONS)
    assert narrow is not None, why
    wide, _ = explorer_service.analysis(run, "lens", positions=64)
    assert narrow.start == run.n_tokens - LENS_DEFAULT_POSITIONS and wide.start == run.n_tokens - 64
    assert wide.top_ids.shape == (run.config.n_layer, 64)
    np.testing.assert_array_equal(wide.top_ids[:, -LENS_DEFAULT_POSITIONS:], narrow.top_ids)
    np.testing.assert_allclose(wide.top_probs[:, -LENS_DEFAULT_POSITIONS:], narrow.top_probs, rtol=1e-6, atol=1e-7)
    again, _ = explorer_service.analysis(run, "lens", positions=64)
    assert again is wide  # kept with the Run
    heat = tab_blocks.render(run, narrow, tokenizer).lens
    # The cell's text is what texttemplate can read (it reads no customdata: the cells showed "-").
    assert len(heat.data[0].x) == LENS_DEFAULT_POSITIONS and heat.data[0].texttemplate == "%{text}"
    # A cell writes its top token as far as it fits (longer ones ran into their neighbours at 24
    # positions); the hover keeps it whole.
    written = np.asarray(heat.data[0].text)
    assert all(
        len(cell.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")) <= tab_blocks.LENS_CELL_CHARS
        for cell in written.ravel()
    )
    assert f"last {LENS_DEFAULT_POSITIONS} positions" in heat.layout.title.text


# -- two prompts side by side ---------------------------------------------------------------------

COMPARE_TEXT = "The dog sat on the mat. The dog sat on the"


@pytest.fixture(scope="module")
def other_run(explorer_service):
    """B: the example with one word changed, a live Run through the same service."""
    return explorer_service.run(COMPARE_TEXT)


@pytest.fixture(scope="module")
def other_lens(explorer_service, other_run):
    result, why = explorer_service.analysis(other_run, "lens")
    assert result is not None, why
    return result


def test_compare_draws_bs_lens_with_as_function_from_bs_own_stream(
    tiny_run, lens, other_run, other_lens, weights, tokenizer
):
    views = tab_blocks.render(tiny_run, lens, tokenizer, tab_blocks.MEAN, True, other_run, other_lens)
    assert views.compare_panel["visible"] is True
    display = tab_blocks.token_display(tokenizer)
    assert (
        views.compare_lens.to_json()
        == tab_blocks.lens_heatmap(other_run, other_lens, display, compare.B.name).to_json()
    )
    assert title_of(views.compare_lens).startswith(compare.B.name)
    heat = views.compare_lens.data[0]
    assert list(heat.x) == other_run.labels
    probability = np.asarray(heat.customdata)[..., 2].astype(np.float64)
    # Each row against an independent float64 lens of B's own residual stream (LENS_RTOL, as A's).
    eps = other_run.config.layer_norm_epsilon
    for layer in range(other_run.config.n_layer):
        probs = float64_softmax(float64_lens(other_run.trace[f"blocks.{layer}.hook_resid_post"], weights, eps))
        np.testing.assert_allclose(probability[layer], probs.max(axis=-1), rtol=LENS_RTOL, atol=0)


@pytest.mark.parametrize(
    "top_a, top_b, part",
    [
        ([5, 5, 5], [5, 5, 5], None),  # the same prediction: they do not part
        ([5, 5, 7], [5, 5, 8], 2),  # agree through block 1, part at block 2
        ([5, 6, 7], [5, 9, 8], 1),
        ([5, 5, 7], [4, 5, 8], 2),  # an early disagreement that comes back together does not count
        ([1, 2, 3], [4, 5, 6], 0),  # never the same
        ([1, 5, 5], [2, 5, 5], None),  # apart at first, the same at the end
    ],
)
def test_parting_layer_is_where_the_top_tokens_differ_to_the_end(top_a, top_b, part):
    assert tab_blocks.parting_layer(np.array(top_a), np.array(top_b)) == part


def test_parting_figure_shows_both_runs_top_tokens_at_their_last_position(
    tiny_run, lens, other_run, other_lens, tokenizer
):
    views = tab_blocks.render(tiny_run, lens, tokenizer, tab_blocks.MEAN, True, other_run, other_lens)
    fig = views.parting
    a_line, b_line = fig.data
    L = tiny_run.config.n_layer
    assert list(a_line.x) == [f"after block {i}" for i in range(L)]
    for line, run, run_lens in ((a_line, tiny_run, lens), (b_line, other_run, other_lens)):
        np.testing.assert_array_equal(np.asarray(line.y, dtype=np.float64), run_lens.top_probs[:, -1])
        assert list(line.text) == [plot_text(tokenizer.token(int(t)).display) for t in run_lens.top_ids[:, -1]]
        assert run.labels[-1] in line.name and "text" in line.mode
    # The lens after the last block is the model's output: each run's own final prediction.
    assert int(lens.top_ids[-1, -1]) == int(np.argmax(tiny_run.trace["logits"][-1]))
    assert int(other_lens.top_ids[-1, -1]) == int(np.argmax(other_run.trace["logits"][-1]))
    part = tab_blocks.parting_layer(lens.top_ids[:, -1], other_lens.top_ids[:, -1])
    lines_drawn = [shape for shape in fig.layout.shapes if shape.type == "line"]
    assert (len(lines_drawn) == 1) == (part is not None)
    if part is not None:
        assert lines_drawn[0].x0 == part - 0.5
    assert tab_blocks.parting_note(lens.top_ids[:, -1], other_lens.top_ids[:, -1]) in title_of(fig)
    assert views.compare_summary.startswith("**Where they part:**")


def test_without_a_compare_prompt_the_panel_is_hidden(tiny_run, lens, tokenizer):
    views = tab_blocks.render(tiny_run, lens, tokenizer)
    assert views.compare_panel["visible"] is False
    assert all(v == gr.skip() for v in (views.compare_lens, views.parting, views.compare_summary))
    why = "the analysis graph is compiling"
    waiting = tab_blocks.render(tiny_run, lens, tokenizer, tab_blocks.MEAN, True, tiny_run, why)
    assert waiting.compare_lens.layout.annotations[0].text == why and waiting.compare_summary == why


def test_built_tab_draws_the_compare_prompt_and_widening_redraws_bs_lens(explorer_service, tiny_run, other_run):
    view = build_view(tab_blocks, explorer_service)
    views = view.render(tiny_run.request, True, LENS_DEFAULT_POSITIONS, other_run.request)
    assert views.compare_panel["visible"] is True and title_of(views.compare_lens).startswith(compare.B.name)
    _, widen = view.handlers
    widened = widen[0](tiny_run.request, 64, other_run.request, True)
    assert widened._fields == ("lens", "final", "compare_lens", "rendered_key")
    assert title_of(widened.compare_lens).startswith(compare.B.name)
    assert widened.rendered_key == view.key(tiny_run.request, [True, 64, other_run.request])
