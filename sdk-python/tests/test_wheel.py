"""The package builds into a wheel offline (no index, no build isolation) and imports from it."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Wheel(unittest.TestCase):
    def test_every_module_parses_as_python_3_9(self) -> None:
        package = os.path.join(ROOT, "runrgateway")
        modules = [name for name in os.listdir(package) if name.endswith(".py")]
        self.assertGreaterEqual(len(modules), 8)
        for name in modules:
            with open(os.path.join(package, name), encoding="utf-8") as handle:
                ast.parse(handle.read(), name, feature_version=(3, 9))

    def test_builds_offline_and_the_installed_wheel_imports(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
            source = os.path.join(tmp, "src")
            shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
            out = os.path.join(tmp, "dist")
            env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            built = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, source],
                capture_output=True, text=True, env=env, timeout=120,
            )
            self.assertEqual(built.returncode, 0, built.stdout + built.stderr)
            wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
            self.assertEqual(len(wheels), 1, wheels)
            self.assertTrue(wheels[0].startswith("runrgateway-0.1.0-py3-none-any"), wheels[0])
            with zipfile.ZipFile(os.path.join(out, wheels[0])) as archive:
                names = archive.namelist()
                metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
            self.assertIn("runrgateway/py.typed", names)
            self.assertFalse([n for n in names if n.startswith("tests/")], "tests stay out of the wheel")
            self.assertIn("Requires-Python: >=3.9", metadata)
            self.assertIn("Requires-Dist: cryptography", metadata)

            target = os.path.join(tmp, "site")
            installed = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target,
                 os.path.join(out, wheels[0])],
                capture_output=True, text=True, env=env, timeout=120,
            )
            self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
            imported = subprocess.run(
                [sys.executable, "-c", "import runrgateway, sys; print(runrgateway.__version__, runrgateway.__file__)"],
                capture_output=True, text=True, env={**env, "PYTHONPATH": target}, cwd=tmp, timeout=60,
            )
            self.assertEqual(imported.returncode, 0, imported.stderr)
            version, path = imported.stdout.split()
            self.assertEqual(version, "0.1.0")
            self.assertTrue(path.startswith(target), path)


if __name__ == "__main__":
    unittest.main()
