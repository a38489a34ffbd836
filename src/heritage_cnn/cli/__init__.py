"""The `heritage` command (`main`): one subcommand per job, each with its own --help and an example.

Each command group is a module here (`data`, `train`, `evaluate`, `predict`, `elements`,
`inside`, `generate`, `review`, `teach`, `serve`) with a `register(commands)` and thin `cmd_*` functions over the library; options shared by
several commands are declared once in `options`. The library never imports this package.
"""
