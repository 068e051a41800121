"""Build hook: the web UI's browser assets, taken from npm at build time.

The UI's pages render flow diagrams with Mermaid. The browser never fetches it from
the internet: its standalone bundle (``dist/mermaid.min.js``, an IIFE that defines
``window.mermaid`` from a plain ``<script src>``) and its LICENSE are copied from the
npm package pinned in ``ui/package-lock.json`` into ``src/routilux/ui/static/vendor/``
and built into the wheel from there.

The vendor folder is generated (and ignored by git). It is rebuilt -- ``npm ci`` in
``build/ui-npm/``, scripts off, npm's cache inside that folder -- only when the bundle
is missing or its stamp (``mermaid.json``: version and SHA-256) does not match the
locked version and the file. Without npm the build fails in CI (``CI`` or
``ROUTILUX_REQUIRE_SERVICES=1`` set) and otherwise warns and goes on without the
bundle; the UI then shows each diagram's Mermaid source instead.

An editable install (``pip install -e .``) gets the same files in the source tree,
where the installed package already reads them; standard wheels and the sdist
force-include them, since git-ignored files are otherwise left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The npm manifest and lockfile that pin the assets' versions.
NPM_DIR = Path("ui")
#: Where ``npm ci`` runs (inside the checkout's ignored build folder).
NPM_BUILD_DIR = Path("build") / "ui-npm"
#: The generated folder the UI serves under ``/static/vendor/``.
VENDOR_DIR = Path("src") / "routilux" / "ui" / "static" / "vendor"
BUNDLE = "mermaid.min.js"
LICENSE = "mermaid.LICENSE"
STAMP = "mermaid.json"
#: The package's file that is the standalone browser bundle.
PACKAGE_BUNDLE = Path("dist") / "mermaid.min.js"
PACKAGE = "mermaid"
#: npm ci of the pinned tree normally takes well under a minute.
NPM_TIMEOUT_S = 600


class AssetError(RuntimeError):
    """The UI's browser assets could not be built (the message says why and what to do)."""


def assets_required(environ: dict[str, str] | None = None) -> bool:
    """Whether a missing asset fails the build: in CI it must, elsewhere it warns."""
    env = os.environ if environ is None else environ
    return env.get("ROUTILUX_REQUIRE_SERVICES") == "1" or bool(env.get("CI"))


def locked_version(root: Path) -> str:
    """The version of Mermaid that ``ui/package-lock.json`` pins."""
    lock_path = root / NPM_DIR / "package-lock.json"
    try:
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
        version = lock["packages"][f"node_modules/{PACKAGE}"]["version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"{lock_path}: no locked version of {PACKAGE!r} ({exc})") from exc
    if not isinstance(version, str) or not version:
        raise AssetError(f"{lock_path}: the locked version of {PACKAGE!r} is not a string")
    return version


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vendored_matches(root: Path, version: str) -> bool:
    """Whether the vendor folder holds the bundle of ``version``, unchanged since copied."""
    vendor = root / VENDOR_DIR
    try:
        stamp = json.loads((vendor / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    bundle = vendor / BUNDLE
    return (
        isinstance(stamp, dict)
        and stamp.get("version") == version
        and bundle.is_file()
        and (vendor / LICENSE).is_file()
        and stamp.get("sha256") == sha256(bundle)
    )


def run_npm_ci(root: Path, npm: str) -> Path:
    """``npm ci`` of ``ui/``'s lockfile in the build folder; returns the package's path."""
    work = root / NPM_BUILD_DIR
    work.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(root / NPM_DIR / name, work / name)
    env = dict(os.environ)
    # npm's download cache stays inside the checkout, never in the user's home.
    env["npm_config_cache"] = str(work / ".npm-cache")
    command = [
        npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True,
            timeout=NPM_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"`npm ci` in {work} did not run: {exc}") from exc
    if result.returncode != 0:
        words = (result.stderr or result.stdout).strip()[-3000:]
        raise AssetError(f"`npm ci` in {work} failed (exit {result.returncode}):\n{words}")
    return work / "node_modules" / PACKAGE


def install_bundle(root: Path, package: Path, version: str) -> None:
    """Copy the package's bundle and LICENSE into the vendor folder, then the stamp."""
    manifest = package / "package.json"
    try:
        installed = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(f"{manifest}: not an installed {PACKAGE} package ({exc})") from exc
    if installed != version:
        raise AssetError(
            f"{manifest}: npm installed {PACKAGE} {installed}, the lock pins {version}"
        )
    source = package / PACKAGE_BUNDLE
    if not source.is_file():
        raise AssetError(f"{source}: {PACKAGE} {version} has no browser bundle at {PACKAGE_BUNDLE}")
    vendor = root / VENDOR_DIR
    vendor.mkdir(parents=True, exist_ok=True)
    # The stamp goes last and every file is replaced whole, so an interrupted copy
    # leaves no stamp that vouches for a partial bundle.
    (vendor / STAMP).unlink(missing_ok=True)
    for src, name in ((source, BUNDLE), (package / "LICENSE", LICENSE)):
        _replace(vendor / name, src.read_bytes())
    stamp = {"package": PACKAGE, "version": version, "sha256": sha256(vendor / BUNDLE)}
    _replace(vendor / STAMP, (json.dumps(stamp, indent=2) + "\n").encode())


def _replace(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def ensure_assets(root: Path, npm: str | None) -> bool:
    """Make the vendor folder match the lock; False when it cannot (npm missing).

    Raises AssetError when npm is there but the build of the assets fails.
    """
    version = locked_version(root)
    if vendored_matches(root, version):
        return True
    if npm is None:
        return False
    install_bundle(root, run_npm_ci(root, npm), version)
    return True


class UIAssetsHook(BuildHookInterface):
    """Puts the UI's vendored browser assets into the wheel and the sdist."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        required = assets_required()
        try:
            built = ensure_assets(root, shutil.which("npm"))
        except AssetError as exc:
            if required:
                raise
            self.app.display_warning(f"routilux: the UI's Mermaid bundle was not built: {exc}")
            return
        if not built:
            message = (
                f"routilux: npm was not found, so the web UI's Mermaid bundle "
                f"({VENDOR_DIR / BUNDLE}) is not built; install Node.js and npm "
                f"(Debian: apt-get install nodejs npm) and build again"
            )
            if required:
                raise AssetError(f"{message} (CI or ROUTILUX_REQUIRE_SERVICES=1 is set)")
            self.app.display_warning(f"{message}; the UI shows diagrams as Mermaid source")
            return
        if version == "editable":
            # The editable install reads the package from src/, where the files are.
            return
        for name in (BUNDLE, LICENSE, STAMP):
            source = (VENDOR_DIR / name).as_posix()
            target = source if self.target_name == "sdist" else source.removeprefix("src/")
            build_data["force_include"][str(root / source)] = target
