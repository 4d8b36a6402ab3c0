"""`python -m tflite_export` -> `tflite_export.cli.main`."""

import sys

from tflite_export.cli import main

sys.exit(main())
