"""Imported by every Python process a test starts while `pytest --bf16-autocast` runs (tests/conftest.py puts this
folder first on their PYTHONPATH): the library's autocast decision forced on in that process too, so a command run in
a subprocess (`heritage serve`, `heritage train`) computes as the test that checks it does."""

from heritage_cnn.base import devices

devices.cpu_has_native_bf16 = lambda: True
