"""heritage-cnn: recognise, explain and draw elements of architectural heritage with a CNN."""

__version__ = "0.1.0"
