"""napari tests: a real viewer on a real X server (Xvfb, Mesa's software OpenGL).

Qt's ``offscreen`` platform gives vispy no OpenGL context, so these tests start Xvfb themselves
(once per session, only when they run) unless a display is already there. napari's pytest plugin
is kept out of the rest of the suite (``-p no:napari`` in pyproject.toml: its autouse fixtures
and log-record factory would apply to every test); its viewer fixture is imported here instead.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess

import pytest

try:
    import napari  # noqa: F401
    import pytestqt  # noqa: F401
except ImportError:          # the napari extra is not installed: the tests say so and skip
    HAVE_NAPARI = False
else:
    HAVE_NAPARI = True
    from napari.utils._testsupport import (_clean_themes, _disable_qt_warnings, make_napari_viewer,  # noqa: F401
                                           mock_app_model, pytest_runtest_makereport)


def pytest_addoption(parser):
    """napari's options, which its viewer fixture reads (added by its plugin when that is loaded)."""
    if not HAVE_NAPARI:
        return
    from napari.utils._testsupport import pytest_addoption as napari_options

    try:
        napari_options(parser)
    except ValueError:         # napari's plugin is loaded (pytest run without this project's addopts)
        pass


def _die_with_parent() -> None:
    """In the X server's process: SIGTERM when pytest exits, however it exits."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def x_display():
    """A display for Qt: the one there is, else an Xvfb started for this session."""
    if not HAVE_NAPARI:
        pytest.skip("the napari plugin is not installed: pip install -e '.[napari,napari-test]' (scripts/setup.sh does)")
    if os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb":
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        message = ("no X display and no Xvfb: the napari tests need one (as root: apt-get install xvfb xauth libgl1 "
                   "libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libxcb-icccm4 libxcb-image0 "
                   "libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 "
                   "libxcb-cursor0; scripts/setup.sh does it when run as root)")
        if os.geteuid() == 0:          # CI runs as root, and its set-up installs Xvfb: a missing one is a failure
            pytest.fail(message)
        pytest.skip(message)
    read, write = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp",
                               "+extension", "GLX"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start (no display number came back)")
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    # The server stays up until pytest exits (it dies with it): Qt keeps its connection to the
    # display until the very end, and a server stopped under it would fail the run at exit.
    yield os.environ["DISPLAY"]
