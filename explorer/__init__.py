"""The explorer's server side: what turns a user's text into Runs and keeps them, with no UI.

- ``explorer.settings``: what the host allows (bounds on every request), from the environment.
- ``explorer.runs``: ``RunRequest`` (the one request, from the page's state to the engine) and ``Run``.
- ``explorer.loading``: models loading in the background, and the status line.
- ``explorer.service``: ``ExplorerService``, text -> Run (live, precomputed or pending).
- ``explorer.store``: the LRU of traces; ``explorer.examples``: precomputed example traces;
  ``explorer.analyses``: the analysis graph's views of a Run, made on demand.
- Scheduling (batching, priorities, lanes) is ``gpt2_max.scheduling``, shared with the engine.

The layout: ``app.py`` -> ``components`` (the tabs) -> ``explorer`` -> ``gpt2_max`` (the model).
"""
