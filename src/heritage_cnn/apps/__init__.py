"""Workflows built from the layers below: the HTML report, the web server and its uploads, the evaluation on a split,
the demo and report pipelines."""
