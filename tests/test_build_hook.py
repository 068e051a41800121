"""The build hook (hatch_build.py) that vendors the web UI's Mermaid bundle.

npm is replaced by a small script that lays out a package the way ``npm ci`` does and
records how it was called, so these tests need neither npm nor the network. The last
test checks the real bundle of this checkout (built by ``pip install -e .``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from services import unavailable

REPO = Path(__file__).resolve().parent.parent

try:
    import hatchling  # noqa: F401
except ImportError:  # pragma: no cover - dev installs have it
    hatchling = None


def load_hook():
    if hatchling is None:
        unavailable("hatchling is not installed (pip install hatchling)")
    spec = importlib.util.spec_from_file_location("hatch_build_under_test", REPO / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def hook():
    return load_hook()


FAKE_NPM = """\
#!{python}
import json, os, pathlib, sys
record = pathlib.Path(os.environ["FAKE_NPM_RECORD"])
record.write_text(json.dumps({{
    "argv": sys.argv[1:], "cwd": os.getcwd(), "cache": os.environ.get("npm_config_cache"),
}}))
if os.environ.get("FAKE_NPM_FAIL"):
    sys.stderr.write("npm error code E404 no such package\\n")
    sys.exit(1)
lock = json.loads(pathlib.Path("package-lock.json").read_text())
version = os.environ.get("FAKE_NPM_VERSION") or lock["packages"]["node_modules/mermaid"]["version"]
package = pathlib.Path("node_modules/mermaid")
(package / "dist").mkdir(parents=True, exist_ok=True)
(package / "package.json").write_text(json.dumps({{"name": "mermaid", "version": version}}))
(package / "dist" / "mermaid.min.js").write_text(
    "var m={{}};globalThis[\\"mermaid\\"] = m; // " + version + "\\n"
)
(package / "LICENSE").write_text("The MIT License\\n")
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A project root with the checkout's npm manifest and lockfile, and a fake npm."""
    root = tmp_path / "project"
    (root / "ui").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        (root / "ui" / name).write_bytes((REPO / "ui" / name).read_bytes())
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "npm-call.json"
    monkeypatch.setenv("FAKE_NPM_RECORD", str(record))
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)
    monkeypatch.delenv("FAKE_NPM_VERSION", raising=False)
    return root, str(npm), record


def test_the_lock_pins_one_exact_version_of_mermaid(hook):
    manifest = json.loads((REPO / "ui" / "package.json").read_text())
    pinned = manifest["dependencies"]["mermaid"]
    assert pinned[0].isdigit() and set(pinned) <= set("0123456789."), pinned
    assert hook.locked_version(REPO) == pinned
    assert pinned.split(".")[0] == "12"


def test_a_missing_bundle_is_built_with_npm_ci_inside_the_checkout(hook, project):
    root, npm, record = project
    assert hook.ensure_assets(root, npm) is True

    call = json.loads(record.read_text())
    assert call["argv"][0] == "ci" and "--ignore-scripts" in call["argv"]
    assert Path(call["cwd"]) == root / hook.NPM_BUILD_DIR
    # npm's cache is in the checkout's build folder, not the user's home.
    assert Path(call["cache"]).is_relative_to(root / "build")
    vendor = root / hook.VENDOR_DIR
    assert sorted(p.name for p in vendor.iterdir()) == [
        "mermaid.LICENSE",
        "mermaid.json",
        "mermaid.min.js",
    ]
    assert 'globalThis["mermaid"]' in (vendor / "mermaid.min.js").read_text()
    stamp = json.loads((vendor / "mermaid.json").read_text())
    assert stamp["version"] == hook.locked_version(root)
    assert hook.vendored_matches(root, stamp["version"])


def test_a_matching_bundle_is_kept_and_needs_no_npm(hook, project):
    root, npm, record = project
    hook.ensure_assets(root, npm)
    record.unlink()
    assert hook.ensure_assets(root, None) is True
    assert hook.ensure_assets(root, npm) is True
    assert not record.exists()  # npm did not run again


@pytest.mark.parametrize("damage", ["other version", "edited bundle", "no stamp", "no license"])
def test_a_bundle_that_does_not_match_the_lock_is_rebuilt(hook, project, damage):
    root, npm, record = project
    hook.ensure_assets(root, npm)
    vendor = root / hook.VENDOR_DIR
    if damage == "other version":
        stamp = json.loads((vendor / "mermaid.json").read_text())
        stamp["version"] = "11.0.0"
        (vendor / "mermaid.json").write_text(json.dumps(stamp))
    elif damage == "edited bundle":
        with (vendor / "mermaid.min.js").open("a") as stream:
            stream.write("// changed\n")
    elif damage == "no stamp":
        (vendor / "mermaid.json").unlink()
    else:
        (vendor / "mermaid.LICENSE").unlink()
    version = hook.locked_version(root)
    assert not hook.vendored_matches(root, version)
    assert hook.ensure_assets(root, None) is False  # no npm: cannot repair it
    record.unlink()
    assert hook.ensure_assets(root, npm) is True
    assert record.exists()
    assert hook.vendored_matches(root, version)


def test_npm_installing_another_version_than_the_lock_is_an_error(hook, project, monkeypatch):
    root, npm, _ = project
    monkeypatch.setenv("FAKE_NPM_VERSION", "11.0.0")
    with pytest.raises(hook.AssetError, match="npm installed mermaid 11.0.0, the lock pins"):
        hook.ensure_assets(root, npm)
    assert not (root / hook.VENDOR_DIR / "mermaid.json").exists()


def test_a_failing_npm_ci_names_the_folder_and_says_what_npm_said(hook, project, monkeypatch):
    root, npm, _ = project
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    said = r"`npm ci` in .*ui-npm failed \(exit 1\):\nnpm error"
    with pytest.raises(hook.AssetError, match=said):
        hook.ensure_assets(root, npm)


class FakeApp:
    def __init__(self):
        self.warnings = []

    def display_warning(self, message):
        self.warnings.append(message)


def run_hook(hook, root, target, version, monkeypatch, npm):
    monkeypatch.setattr(hook.shutil, "which", lambda name: npm if name == "npm" else None)
    app = FakeApp()
    instance = hook.UIAssetsHook(str(root), {}, None, None, str(root / "dist"), target, app)
    build_data = {"force_include": {}}
    instance.initialize(version, build_data)
    return build_data["force_include"], app.warnings


@pytest.mark.parametrize("variable", ["CI", "ROUTILUX_REQUIRE_SERVICES"])
def test_without_npm_the_build_fails_in_ci(hook, project, monkeypatch, variable):
    root, _, _ = project
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ROUTILUX_REQUIRE_SERVICES", raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(hook.AssetError, match="npm was not found.*apt-get install nodejs npm"):
        run_hook(hook, root, "wheel", "standard", monkeypatch, npm=None)


def test_without_npm_a_local_build_warns_and_goes_on(hook, project, monkeypatch):
    root, _, _ = project
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ROUTILUX_REQUIRE_SERVICES", raising=False)
    included, warnings = run_hook(hook, root, "wheel", "standard", monkeypatch, npm=None)
    assert included == {}
    (warning,) = warnings
    assert "npm was not found" in warning and "Mermaid source" in warning


def test_the_wheel_and_the_sdist_force_include_the_bundle(hook, project, monkeypatch):
    root, npm, _ = project
    included, warnings = run_hook(hook, root, "wheel", "standard", monkeypatch, npm)
    assert warnings == []
    vendor = root / hook.VENDOR_DIR
    assert included == {
        str(vendor / name): f"routilux/ui/static/vendor/{name}"
        for name in ("mermaid.min.js", "mermaid.LICENSE", "mermaid.json")
    }
    included, _ = run_hook(hook, root, "sdist", "standard", monkeypatch, npm)
    assert set(included.values()) == {
        f"src/routilux/ui/static/vendor/{name}"
        for name in ("mermaid.min.js", "mermaid.LICENSE", "mermaid.json")
    }


def test_an_editable_install_gets_the_files_in_the_source_tree_only(hook, project, monkeypatch):
    root, npm, _ = project
    included, _ = run_hook(hook, root, "wheel", "editable", monkeypatch, npm)
    # Nothing copied into site-packages: the editable install reads src/ itself.
    assert included == {}
    assert hook.vendored_matches(root, hook.locked_version(root))


def test_this_checkout_has_the_locked_bundle(hook):
    """`pip install -e .` (make test) built the bundle the UI serves."""
    version = hook.locked_version(REPO)
    if not hook.vendored_matches(REPO, version):
        unavailable(
            f"{hook.VENDOR_DIR / hook.BUNDLE} is missing or not mermaid {version}: "
            "install npm and run `pip install -e .`"
        )
    bundle = (REPO / hook.VENDOR_DIR / hook.BUNDLE).read_bytes()
    # The standalone bundle: a plain <script src> defines window.mermaid.
    assert b'globalThis["mermaid"]' in bundle[-4096:]
    assert not bundle.lstrip().startswith(b"import ")
    assert os.path.getsize(REPO / hook.VENDOR_DIR / hook.LICENSE) > 0
