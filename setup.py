"""Only here to install ``fsgen_eval_lm_eval.pth`` into site-packages (everything else is in pyproject.toml).

lm-eval 0.4.13 has no plugin discovery for models; the .pth line makes every Python process of the
environment install fsgen_eval's post-import hook (fsgen_eval/lm_eval_hook.py), which registers
``--model fsgen`` once lm-eval's registry is imported and does nothing otherwise. A .pth file must sit at
the top of site-packages, which package data cannot do, hence this build_py step: it writes the file into
the build folder (regular wheels) and, for ``pip install -e``, into the editable wheel.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "fsgen_eval_lm_eval.pth"
# A .pth line starting with "import" is executed at interpreter start-up; keep it cheap and harmless.
PTH_LINE = "import fsgen_eval.lm_eval.hook as _fsgen_hook; _fsgen_hook.install()\n"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        targets = [Path(self.build_lib)]
        if getattr(self, "editable_mode", False):
            # setuptools builds editable wheels from the install command's folder, not from build_lib
            targets.append(Path(self.get_finalized_command("install").install_lib))
        for folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PTH_NAME).write_text(PTH_LINE, encoding="utf-8")


setup(cmdclass={"build_py": BuildPyWithPth})
