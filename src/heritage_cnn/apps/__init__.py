"""Workflows built from the layers below: the HTML report, the web server and its uploads, the demo and report pipelines."""
