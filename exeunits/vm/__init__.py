"""The vm exe-unit: container images (GVMI or docker save) run on the Docker engine."""

from __future__ import annotations

from exeunits.vm.gvmi import GvmiLayout, check_config, config_changes, import_gvmi, pack_gvmi, read_gvmi
from exeunits.vm.image import VmImage, detect_format, image_tag, load_docker_archive, prepare_image
from exeunits.vm.unit import ACTIVITY_LABEL, ROOT_LABEL, RUNTIME_NAME, VmExeUnit, connect, engine_available, sweep

__all__ = [
    "GvmiLayout",
    "check_config",
    "config_changes",
    "import_gvmi",
    "pack_gvmi",
    "read_gvmi",
    "VmImage",
    "detect_format",
    "image_tag",
    "load_docker_archive",
    "prepare_image",
    "ACTIVITY_LABEL",
    "ROOT_LABEL",
    "RUNTIME_NAME",
    "VmExeUnit",
    "connect",
    "engine_available",
    "sweep",
]
