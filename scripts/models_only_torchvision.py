"""Installs torchvision's model definitions, without its compiled operators, into this Python's
site-packages, where no torchvision imports: `make setup` runs it so that timm (which imports
torchvision) and `torchvision.models:NAME` factories run on the pinned CPU torch.

torchvision's wheels link CUDA libraries in their compiled operators (nms, roi_align, video
decoding), which the pinned CPU torch cannot load ("operator torchvision::nms does not exist");
its model definitions are plain Python. This writes the wheel's Python files and, in place of its
__init__.py (which loads those operators), one that only names the version. A machine with a
working torchvision keeps it.

    python scripts/models_only_torchvision.py WHEEL
"""

import importlib.util
import sys
import sysconfig
import zipfile
from pathlib import Path

INIT = '''"""torchvision's model definitions only, without its compiled operators (kdforge's
scripts/models_only_torchvision.py): torchvision.models and what it imports run; operators
such as torchvision.ops.nms do not."""

__version__ = "{version}"
'''


def main(wheel: Path) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        print("torchvision imports here already; left as it is")
        return
    target = Path(sysconfig.get_paths()["purelib"])
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith("torchvision/") and n.endswith(".py") and n != "torchvision/__init__.py"]
        archive.extractall(target, names)
    version = wheel.name.split("-")[1]
    (target / "torchvision" / "__init__.py").write_text(INIT.format(version=f"{version}+models-only"))
    print(f"torchvision {version} model definitions ({len(names)} files) in {target / 'torchvision'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
