"""``python -m biencoder`` (also what ``torchrun -m biencoder`` runs)."""

import sys

from biencoder.cli import main

sys.exit(main())
