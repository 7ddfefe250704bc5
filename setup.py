"""The wheel carries the shipped prompt set as package data (fsapp/prompts).

The prompts live once in git, in the top-level ``sounds/`` folder (the folder the
prompt layout and the design documents name). A regular build copies that folder into
the built package; an editable install reads it where it is, from the checkout.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOUNDS = Path(__file__).resolve().parent / "sounds"


class BuildWithPrompts(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not SOUNDS.is_dir():
            raise SystemExit(f"{SOUNDS}: the prompt set is missing from the source tree")
        target = Path(self.build_lib) / "fsapp" / "prompts"
        for path in sorted(SOUNDS.rglob("*")):
            if path.is_file():
                rel = path.relative_to(SOUNDS)
                self.mkpath(str((target / rel).parent))
                self.copy_file(str(path), str(target / rel))


setup(cmdclass={"build_py": BuildWithPrompts})
