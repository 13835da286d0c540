import sys

from hal0.cli.main import main

sys.exit(main())
