"""The Embed tab's figures hold the trace's embedding rows, their norms, and independent nearest-token cosines."""

from __future__ import annotations

import numpy as np
import pytest
from tab_helpers import build_view, title_of

from components import tab_embed


@pytest.fixture(scope="module")
def weights(explorer_service):
    return explorer_service.model.weights


def render_with_arrays(run, service, **kwargs):
    nearest, why = service.analysis(run, "nearest")
    return tab_embed.render_with_arrays(
        run, service.tokenizer, nearest=nearest or why, wpe=service.model.weights["wpe.weight"], **kwargs
    )


def render(run, service, **kwargs):
    views, _ = render_with_arrays(run, service, **kwargs)
    return views


def independent_nearest(wte: np.ndarray, token_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    table = wte.astype(np.float64)
    vector = table[token_id]
    cosine = table @ vector / (np.linalg.norm(table, axis=1) * np.linalg.norm(vector))
    order = [i for i in np.argsort(-cosine) if i != token_id][:k]
    return np.asarray(order), cosine[order]


def test_heatmaps_show_token_position_and_summed_rows(tiny_run, explorer_service, weights):
    views = render(tiny_run, explorer_service)
    token_fig, position_fig, sum_fig = views.token, views.position, views.sum
    T, E = tiny_run.n_tokens, tiny_run.config.n_embd
    np.testing.assert_array_equal(token_fig.data[0].z, tiny_run.trace["hook_embed"])
    np.testing.assert_array_equal(position_fig.data[0].z, tiny_run.trace["hook_pos_embed"])
    np.testing.assert_array_equal(sum_fig.data[0].z, tiny_run.trace["blocks.0.hook_resid_pre"])
    # The right tensors: rows of wte at the token ids, rows 0..T-1 of wpe, and their sum.
    np.testing.assert_array_equal(token_fig.data[0].z, weights["wte.weight"][list(tiny_run.token_ids)])
    np.testing.assert_array_equal(position_fig.data[0].z, weights["wpe.weight"][:T])
    np.testing.assert_allclose(sum_fig.data[0].z, token_fig.data[0].z + position_fig.data[0].z, atol=1e-6)
    for fig in (token_fig, position_fig, sum_fig):
        assert list(fig.data[0].y) == tiny_run.labels  # tokens on the y axis
        assert list(fig.data[0].x) == [str(d) for d in range(E)]  # embedding dimension on x
        assert fig.data[0].zmid == 0  # diverging scale centred at 0
        assert fig.layout.height and fig.layout.height >= 260
        assert "%{y}" in fig.data[0].hovertemplate and "%{z" in fig.data[0].hovertemplate


def test_wide_embeddings_show_the_dimensions_with_the_largest_spread(tiny_run, explorer_service, monkeypatch):
    # GPT-2 small's 768 dimensions would not fit a screen; here the tiny model's 64 stand in, 16 shown.
    monkeypatch.setattr(tab_embed, "TOP_SPREAD_DIMS", 16)
    views = render(tiny_run, explorer_service)
    figures = (views.token, views.position, views.sum)
    T, E = tiny_run.n_tokens, tiny_run.config.n_embd
    for fig, key in zip(figures, ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre")):
        rows = tiny_run.trace[key]
        spread = rows.astype(np.float64).std(axis=0)
        dims = np.sort(np.argsort(spread)[-16:])  # the 16 largest stds, in dimension order
        assert list(fig.data[0].x) == [str(d) for d in dims]  # the real dimension numbers
        assert spread[dims].min() >= np.delete(spread, dims).max()
        np.testing.assert_array_equal(fig.data[0].z, rows[:, dims])  # the trace's own values
        assert list(fig.data[0].y) == tiny_run.labels
        assert f"the 16 of {E} dimensions with the largest spread (std over these {T} positions)" in title_of(fig)
    # Different matrices vary along different dimensions: each heatmap picks its own.
    assert list(figures[0].data[0].x) != list(figures[1].data[0].x)


def test_long_inputs_average_the_embedding_rows_and_similarity_over_blocks(tiny_run, explorer_service, monkeypatch):
    monkeypatch.setattr("components.plots.MAX_CELLS_PER_AXIS", 5)
    edges = [0, 2, 4, 7, 9, tiny_run.n_tokens]
    blocks = list(zip(edges[:-1], edges[1:]))
    views, arrays = render_with_arrays(tiny_run, explorer_service)
    token_fig, sim_fig = views.token, views.similarity
    rows = tiny_run.trace["hook_embed"].astype(np.float64)
    np.testing.assert_allclose(token_fig.data[0].z, [rows[a:b].mean(axis=0) for a, b in blocks], rtol=1e-6)
    assert len(token_fig.data[0].x) == tiny_run.config.n_embd  # dimensions are chosen, never averaged
    tokens = [t.display for t in tiny_run.tokens]
    assert list(token_fig.data[0].y) == [f"{a}–{b - 1} {tokens[a]}…{tokens[b - 1]}" for a, b in blocks]
    assert "averaged over blocks of ~2.4 positions" in title_of(token_fig)
    cosine = arrays["position_cosine"]  # the export keeps the full [T, T] matrix
    assert cosine.shape == (tiny_run.n_tokens, tiny_run.n_tokens)
    np.testing.assert_allclose(
        sim_fig.data[0].z, [[cosine[a:b, c:d].mean() for c, d in blocks] for a, b in blocks], rtol=1e-6
    )
    assert "mean cosine" in sim_fig.data[0].hovertemplate


@pytest.mark.parametrize("leave_out_position_0", [True, False])
def test_norms_are_the_l2_norms_per_position(tiny_run, explorer_service, leave_out_position_0):
    norms_fig = render(tiny_run, explorer_service, leave_out_position_0=leave_out_position_0).norms
    expected = {
        "token": np.linalg.norm(tiny_run.trace["hook_embed"], axis=1),
        "position": np.linalg.norm(tiny_run.trace["hook_pos_embed"], axis=1),
        "sum": np.linalg.norm(tiny_run.trace["blocks.0.hook_resid_pre"], axis=1),
    }
    first = 1 if leave_out_position_0 else 0  # position 0 left out of the plot, its norms in the title
    assert len(norms_fig.data) == 3
    for trace, (name, values) in zip(norms_fig.data, expected.items()):
        assert trace.name.startswith(name)
        assert list(trace.x) == tiny_run.labels[first:]
        np.testing.assert_allclose(trace.y, values[first:], rtol=1e-5)
        assert (f"{trace.name} {values[0]:.4g}" in title_of(norms_fig)) == leave_out_position_0
    assert norms_fig.layout.yaxis.type == "log"  # norms span decades on the real GPT-2


@pytest.mark.parametrize("position", [1, None])
def test_nearest_tokens_match_an_independent_cosine_search(tiny_run, explorer_service, weights, position):
    views, arrays = render_with_arrays(tiny_run, explorer_service, position=position)
    nearest_fig = views.nearest
    chosen = tiny_run.n_tokens - 1 if position is None else position
    token_id = tiny_run.token_ids[chosen]
    ids, cosines = independent_nearest(weights["wte.weight"], token_id)
    np.testing.assert_array_equal(arrays["nearest_ids"], ids)
    np.testing.assert_allclose(nearest_fig.data[0].x, cosines, rtol=1e-5, atol=1e-6)
    displays = [explorer_service.tokenizer.token(int(i)).display for i in ids]
    assert list(nearest_fig.data[0].y) == displays
    assert tiny_run.tokens[chosen].display in title_of(nearest_fig)
    assert token_id not in arrays["nearest_ids"]  # the token itself is left out


def test_position_similarity_is_the_cosine_of_wpe_rows(tiny_run, explorer_service, weights):
    T = tiny_run.n_tokens
    sim_fig = render(tiny_run, explorer_service).similarity
    rows = tiny_run.trace["hook_pos_embed"].astype(np.float64)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(sim_fig.data[0].z, unit @ unit.T, atol=1e-6)
    assert list(sim_fig.data[0].x) == tiny_run.labels and list(sim_fig.data[0].y) == tiny_run.labels
    assert (sim_fig.data[0].zmin, sim_fig.data[0].zmax) == (-1.0, 1.0)
    # Beyond the input: wpe's own rows.
    sim_fig = render(tiny_run, explorer_service, n_positions=T + 10).similarity
    rows = weights["wpe.weight"][: T + 10].astype(np.float64)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(sim_fig.data[0].z, unit @ unit.T, atol=1e-6)
    assert list(sim_fig.data[0].x)[:T] == tiny_run.labels and len(sim_fig.data[0].x) == T + 10


def test_out_of_range_controls_are_clamped(tiny_run, explorer_service):
    T = tiny_run.n_tokens
    views, arrays = render_with_arrays(tiny_run, explorer_service, position=10_000, n_positions=10**9)
    sim_fig = views.similarity
    assert arrays["nearest_position"] == T - 1
    assert len(sim_fig.data[0].x) == min(tab_embed.MAX_SIMILARITY_POSITIONS, tiny_run.config.n_positions)
    _, arrays = render_with_arrays(tiny_run, explorer_service, position=-7, n_positions=-3)
    assert arrays["nearest_position"] == 0 and arrays["position_cosine"].shape == (1, 1)
    _, arrays = render_with_arrays(tiny_run, explorer_service, position="not a number", n_positions=float("nan"))
    assert arrays["nearest_position"] == T - 1 and arrays["position_cosine"].shape == (T, T)


def test_without_weights_the_nearest_view_waits_and_the_rest_still_renders(tiny_run, explorer_service):
    views = tab_embed.render(tiny_run, explorer_service.tokenizer, n_positions=500)
    token_fig, nearest_fig, sim_fig = views.token, views.nearest, views.similarity
    assert tab_embed.NEEDS_WEIGHTS in nearest_fig.layout.annotations[0].text.replace(
        "<br>", " "
    )  # wrapped to fit a phone
    assert len(sim_fig.data[0].x) == tiny_run.n_tokens  # no wpe beyond the trace without weights
    np.testing.assert_array_equal(token_fig.data[0].z, tiny_run.trace["hook_embed"])
    views, arrays = tab_embed.render_with_arrays(None, explorer_service.tokenizer)
    assert isinstance(views, tab_embed.EmbedViews) and arrays == {}


def test_tab_builds_and_its_handlers_export_the_plotted_tensors(tiny_run, explorer_service):
    view = build_view(tab_embed, explorer_service)
    assert len(view.outputs) == 9
    assert [c.value for c in view.controls] == [True]  # position 0 left out by default
    result = view.render(tiny_run.request, True)
    assert result.summary.startswith(f"**{tiny_run.n_tokens} tokens**")
    note, update = view.export(tiny_run.request, None, None)
    with np.load(update["value"]) as saved:
        np.testing.assert_array_equal(saved["hook_embed"], tiny_run.trace["hook_embed"])
        np.testing.assert_array_equal(saved["token_ids"], tiny_run.token_ids)
        assert saved["nearest_ids"].shape == (10,)
