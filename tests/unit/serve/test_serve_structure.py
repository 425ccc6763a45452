"""The shape of ``stemforge/serve`` held as a contract (issue 20): routes are module functions
that read ``app.state`` through dependencies, ``app.py`` only builds the app, no function is
over 120 lines, and every atomic write goes through ``stemforge.core.files``.
"""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "stemforge"
#: the modules whose writes and function lengths this file holds
MODULES = sorted((PACKAGE / "serve").glob("*.py")) + [PACKAGE / "core" / "audio.py", PACKAGE / "separate" / "separator.py"]


def test_every_route_is_a_module_function_of_the_router():
    from fastapi.routing import APIRoute

    from stemforge.serve import create_app, routes

    class StandIn:
        def separate(self, audio, sample_rate):
            return {}

    app = create_app(StandIn(), render_png=None)
    endpoints = [r.endpoint for r in routes.router.routes if isinstance(r, APIRoute)]
    assert {e.__name__ for e in endpoints} == {
        "index", "info", "create_job", "get_job", "delete_job", "get_stem_wav", "get_stem_png"
    }
    for endpoint in endpoints:
        assert endpoint.__module__ == "stemforge.serve.routes" and "<locals>" not in endpoint.__qualname__
        assert getattr(routes, endpoint.__name__) is endpoint
    assert set(app.openapi()["paths"]) == {
        "/api/info", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/{stem}.wav", "/api/jobs/{job_id}/{stem}.png"
    }


def test_app_py_only_builds_the_app():
    source = (PACKAGE / "serve" / "app.py").read_text()
    assert len(source.splitlines()) < 400
    tree = ast.parse(source)
    create_app = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "create_app")
    assert not [n for n in ast.walk(create_app) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not create_app]


def test_no_function_is_over_120_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 120:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_atomic_writes_go_through_core_files():
    """No hand-made temporary name renamed into place: os.replace / os.rename are not called."""
    found = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("replace", "rename"):
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id in ("os", "shutil"):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {owner.id}.{node.func.attr}")
    assert not found, found
