"""The layout rules of docs/DESIGN.md, checked on the source: layers, no import circle, one parameter model
with a CLI flag and a sidebar widget per field, the How-it-works neighbourhood equal to the denoiser's mask."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from golddiff import DenoiserParams, NoiseSchedule, load_dataset, make_denoiser
from golddiff.cli import build_parser
from golddiff.data import Dataset
from golddiff.explore import lessons

PKG = ROOT / "golddiff"
# Each sub-package may import only those below it (data is the bottom layer).
LAYERS = ["data", "core", "denoise", "run", "explore", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The golddiff modules a file imports (relative imports resolved; 'from pkg import mod' counts mod)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("golddiff")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("golddiff"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(
                    sub
                    if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                    or (ROOT / Path(*sub.split("."))).is_dir()
                    else target
                )
    return found


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in mods and i != m} for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (c := visit(n)):
            return c
    return None


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_find_cycle_sees_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_between_modules():
    assert find_cycle(graph()) is None


def test_no_import_circle_between_subpackages_and_imports_point_down():
    edges: dict[str, set[str]] = {}
    for mod, deps in graph().items():
        a = layer(mod)
        for d in deps:
            b = layer(d)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
                assert LAYERS.index(b) < LAYERS.index(
                    a
                ), f"{mod} imports {d}: {a} may not import {b}"
    assert find_cycle(edges) is None
    assert len({layer(m) for m in graph()} - {None}) >= 4


MODULE_LINES = 500  # soft limit: one concept per module; past this a module holds two
PAGE_LINES = 250  # a page reads top to bottom: config, the run, the view, render functions


def test_library_never_imports_streamlit_and_modules_stay_small():
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        assert "import streamlit" not in text, p
        lines = text.splitlines()
        assert len(lines) <= MODULE_LINES, f"{p} has {len(lines)} lines"
        long = [i + 1 for i, line in enumerate(lines) if len(line) > 100]
        assert not long, f"{p}: lines over 100 characters: {long[:5]}"


def test_pages_stay_short():
    for p in [ROOT / "app.py", *(ROOT / "app_pages").glob("*.py")]:
        n = len(p.read_text().splitlines())
        assert n < PAGE_LINES, f"{p} has {n} lines"


def test_no_comment_points_at_a_numbered_ticket():
    """'issue 7' or 'finding 2' mean nothing to a reader of the repository: say what they explain."""
    pattern = re.compile(r"\b(issue|finding)s? #?\d+", re.IGNORECASE)
    for p in [*PKG.rglob("*.py"), *(ROOT / "app_pages").glob("*.py"), *(ROOT / "tests").glob("*.py")]:
        if p.name == "test_layout.py":
            continue
        hits = [i + 1 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
        assert not hits, f"{p}: lines {hits[:5]} point at a numbered issue or finding"


def test_nothing_refers_outside_the_repository():
    for p in (
        list(PKG.rglob("*.py"))
        + list((ROOT / "app_pages").glob("*.py"))
        + [ROOT / "README.md"]
        + list((ROOT / "docs").glob("*.md"))
    ):
        assert "../shared" not in p.read_text(), p


def test_readme_is_short_and_its_links_resolve():
    """The README is read in five minutes; everything else lives in docs/ and must exist."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"


# ----------------------------------------------------------------------------- one parameter model


def test_every_param_has_a_cli_flag_with_its_choices():
    sub = build_parser()._subparsers._group_actions[0].choices
    for cmd in ("sample", "bench"):
        opts = {a.dest: a for a in sub[cmd]._actions}
        for spec in DenoiserParams.specs():
            assert spec.name in opts, f"{cmd} lacks {spec.flag}"
            assert spec.flag in opts[spec.name].option_strings
            assert opts[spec.name].choices == spec.choices


SIDEBAR = """
import sys
sys.path.insert(0, {root!r})
import streamlit as st
from app_pages.resources import get_dataset
from app_pages.widgets import param_widgets
st.session_state["out"] = param_widgets(get_dataset("digits"))
"""


@pytest.mark.usefixtures("fresh_st_caches")
def test_every_param_has_a_sidebar_widget_with_a_tooltip():
    at = AppTest.from_string(SIDEBAR.format(root=str(ROOT)), default_timeout=120).run()
    assert not at.exception
    widgets = {w.key: w for w in list(at.number_input) + list(at.radio)}
    for spec in DenoiserParams.specs():
        key = next((k for k in widgets if k == spec.name or k == f"{spec.name}_digits"), None)
        assert key is not None, f"no sidebar widget for {spec.name}"
        assert widgets[key].help == spec.help or widgets[key].help.startswith(spec.help)
    out = at.session_state["out"]
    assert set(out) == set(DenoiserParams.names())
    DenoiserParams.from_mapping(out).validate("hybrid", 1797, (1, 8, 8))  # the defaults are valid


def test_dataset_defaults_follow_the_published_table():
    d = DenoiserParams.dataset_defaults
    assert d(60000, (1, 28, 28))["mask_threshold"] == 0.02  # MNIST, Fashion-MNIST
    assert d(50000, (3, 32, 32))["mask_threshold"] == 0.03  # CIFAR-10
    assert d(15000, (3, 64, 64))["mask_threshold"] == 0.04  # AFHQ 64x64
    assert (d(60000, (1, 28, 28))["k_min"], d(60000, (1, 28, 28))["k_max"]) == (3000, 6000)
    assert d(50000, (3, 32, 32))["low_res"] == 16 and d(15000, (3, 64, 64))["low_res"] == 16


def test_trajectory_meta_holds_the_params_of_the_method():
    from golddiff import sample

    ds = load_dataset("digits")
    traj = sample(make_denoiser("pca", ds, device="cpu", mask_rule="published"), steps=2, n=1)
    assert set(traj.meta["params"]) == set(DenoiserParams.names("pca"))
    assert traj.meta["params"]["mask_rule"] == "published"


# ----------------------------------------------------------------------------- the mask rules


def near_constant_ds(N=400, seed=3) -> Dataset:
    """4x4 images with structure, plus one pixel that is nearly constant (like MNIST's border) but moves
    with the strongest factor: its row of L_t is about eps times a normal row while L_t[0, 0] ~ eps^2,
    so |M0| reaches ~1/eps there."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 3))
    A = rng.standard_normal((3, 16))
    X = np.tanh(0.3 * z @ A + 0.2 * rng.standard_normal((N, 16)))
    X[:, 0] = 0.5 + 0.01 * z[:, 0]
    return Dataset(
        "near-constant",
        torch.tensor(X, dtype=torch.float32).reshape(N, 1, 4, 4),
        np.zeros(N, np.int64),
    )


def published_by_hand(X: np.ndarray, abar: float, threshold: float) -> np.ndarray:
    """The official construction written out in numpy: float32 covariance (divisor N - 1) and SVD, rows divided
    by the diagonal (|d| < 1e-6 -> 1), threshold against the global max."""
    cov = np.cov(X.astype(np.float64), rowvar=False).astype(np.float32)
    U, S, Vh = np.linalg.svd(cov)
    L = (U * (abar * S / (1 - abar + abar * S))) @ Vh
    d = np.diag(L).copy()
    d[np.abs(d) < 1e-6] = 1.0
    M0 = np.abs(L / d[:, None])
    return (M0 >= threshold * M0.max()).astype(np.float32)


def test_published_rule_matches_the_official_construction_and_differs_from_stable():
    ds = near_constant_ds()
    t, thr = 50, 0.05
    den = make_denoiser("pca", ds, device="cpu", mask_threshold=thr, mask_rule="published")
    abar = den.schedule.abar(t)
    got = den.mask(t, abar).numpy()
    want = published_by_hand(ds.flat().numpy(), abar, thr)
    assert (got != want).mean() < 0.02  # float32 round-off may flip entries at the edge
    stable = make_denoiser("pca", ds, device="cpu", mask_threshold=thr).mask(t, abar).numpy()
    assert stable.sum() > 2 * got.sum()  # the near-constant pixel sets the published max
    x_t = torch.randn(2, ds.D, generator=torch.Generator().manual_seed(0))
    a = make_denoiser("pca", ds, device="cpu", mask_threshold=thr, mask_rule="published").denoise(
        x_t, t
    )
    b = make_denoiser("pca", ds, device="cpu", mask_threshold=thr).denoise(x_t, t)
    assert not torch.allclose(a.x0_hat, b.x0_hat, atol=1e-3)


@pytest.mark.parametrize("rule", ["stable", "published"])
def test_how_it_works_neighbourhood_is_the_denoisers_mask_column(rule):
    ds = load_dataset("digits")
    den = make_denoiser("golddiff", ds, device="cpu", mask_rule=rule, mask_threshold=0.03)
    for t, (row, col) in ((100, (3, 4)), (600, (0, 0))):
        nb = lessons.mask_neighbourhood(ds, t, 0.03, row, col, device="cpu", rule=rule)
        column = den.mask(t, NoiseSchedule().abar(t))[:, row * 8 + col].reshape(8, 8).numpy()
        np.testing.assert_array_equal(nb["mask"], column)
        assert nb["size"] == int(column.sum())
