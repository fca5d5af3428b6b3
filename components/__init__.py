"""The explorer's tabs. Each tab module has a pure ``render(...)`` (data in, Plotly figures
and markdown out) and a ``build(ctx)`` that lays the tab out and wires its events.
Dependencies point one way: app.py -> components -> gpt2_max."""
