"""What a student can ship, as one registry: each deployable artifact (a file, the runtime that
runs it, how it is built, verified and timed) is a subclass of `Artifact` registered in its own
module of this package, which is imported here and so found. The export, verify and profile
stages, `kdforge export` and the report loop over the entries a student's `deploy` names.

A new runtime or precision is one module here (see onnxruntime_fp16.py for a short one)."""

import importlib
import pkgutil

from kdforge.export.artifacts.base import Artifact, Built, ExportJob, Runner, artifact, deploy_names, register_artifact, registered

__all__ = ["Artifact", "Built", "ExportJob", "Runner", "artifact", "deploy_names", "register_artifact", "registered"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":  # _name: shared by entries, not one
        importlib.import_module(f"{__name__}.{_module.name}")
