import sys

from lightalign.cli import main

sys.exit(main())
