"""The package layering of docs/architecture.md, checked on the source: no family package imports
another, and the three import circles that #23 broke stay broken (trainer -> hooks, data ->
models, latent cache -> dataset)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(?:from|import)\s+(framework(?:\.\w+)*)", re.M)


def imports_of(folder: Path) -> dict[str, set[str]]:
    """{file: modules it imports from framework}, TYPE_CHECKING imports included."""
    return {
        str(p.relative_to(ROOT)): set(IMPORT.findall(p.read_text())) for p in folder.rglob("*.py")
    }


def offenders(folder: str, forbidden: str) -> list[str]:
    pattern = re.compile(forbidden)
    return sorted(
        f"{path}: {mod}"
        for path, mods in imports_of(ROOT / folder).items()
        for mod in mods
        if pattern.match(mod)
    )


def test_no_family_package_imports_another():
    """Families share through framework/models/dit/, never by importing each other."""
    models = ROOT / "framework" / "models"
    families = sorted(p.name for p in models.iterdir() if (p / "family.py").is_file())
    assert {"cosmos1", "cosmos2"} <= set(families)
    for fam in families:
        others = "|".join(re.escape(o) for o in families if o != fam)
        assert offenders(f"framework/models/{fam}", rf"framework\.models\.({others})\b") == []


def test_the_trainer_does_not_import_the_hooks_package():
    assert offenders("framework/trainer", r"framework\.hooks\b") == []


def test_data_does_not_import_models_trainer_or_hooks():
    assert offenders("framework/data", r"framework\.(models|trainer|hooks)\b") == []


def test_the_latent_cache_does_not_import_the_dataset():
    mods = imports_of(ROOT / "framework" / "data")["framework/data/latent_cache.py"]
    assert "framework.data.dataset" not in mods
