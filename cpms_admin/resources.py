"""Where the templates are: inside the installed package, or in the source tree."""

from pathlib import Path

from cpms_admin.errors import NotReady

_PACKAGE_DIR = Path(__file__).parent


def templates_dir() -> Path:
    """`cpms_admin/templates` in a wheel install, `templates/` beside the package otherwise."""
    for candidate in (_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates"):
        if (candidate / "letters").is_dir():
            return candidate
    raise NotReady("templates not found: reinstall cpms-admin (pip install .)")
