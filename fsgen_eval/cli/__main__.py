"""``python -m fsgen_eval.cli``: the same as the ``fsgen-eval`` command."""

import sys

from fsgen_eval.cli import main

sys.exit(main())
