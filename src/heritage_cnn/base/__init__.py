"""Foundations every layer may use: argument and config checks, atomic file I/O, file names in outputs, devices and threads, figure files."""
