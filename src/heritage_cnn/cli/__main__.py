"""`python -m heritage_cnn.cli ...` is `heritage ...` (torchrun runs `-m heritage_cnn.cli train`)."""

from heritage_cnn.cli.main import main

raise SystemExit(main())
