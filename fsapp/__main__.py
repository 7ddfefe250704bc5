import sys

from fsapp.cli import main

sys.exit(main())
