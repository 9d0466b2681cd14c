import sys

from hooklane.operators.cli import main

sys.exit(main())
