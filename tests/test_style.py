"""The repository is formatted and linted as ruff.toml says (``ruff format`` and ``ruff check``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruff.__main__ import find_ruff_bin

REPO = Path(__file__).resolve().parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([find_ruff_bin(), *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_the_code_is_formatted():
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff format .`:\n{done.stdout}{done.stderr}"


def test_the_code_passes_the_linter():
    done = ruff("check", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff check .`:\n{done.stdout}{done.stderr}"


# What each package may import of the project's others: app.py -> components -> explorer -> gpt2_max.
ALLOWED_IMPORTS = {
    "gpt2_max": {"gpt2_max"},
    "explorer": {"explorer", "gpt2_max"},
    "components": {"components", "explorer", "gpt2_max"},
}
# Third-party packages a layer must not import: the server side and the model know no UI.
UI_PACKAGES = {"gradio", "plotly", "starlette", "fastapi"}


def imported_modules(path: Path) -> set[str]:
    """The top-level names a module imports (``import a.b`` and ``from a.b import c`` give ``a``)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    project = set(ALLOWED_IMPORTS) | {"app"}
    wrong = []
    for package, allowed in ALLOWED_IMPORTS.items():
        for path in sorted((REPO / package).glob("*.py")):
            imported = imported_modules(path)
            wrong += [f"{path.relative_to(REPO)} imports {name}" for name in sorted(imported & project - allowed)]
            if package != "components":
                wrong += [f"{path.relative_to(REPO)} imports {name}" for name in sorted(imported & UI_PACKAGES)]
    assert not wrong, "\n".join(wrong)
